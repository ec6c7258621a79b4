// medregion.hpp -- header-only C++17 RAII wrappers over the C API in medregion.h.
//
// Every failing call throws medregion::Error, which carries the mr_status code and the library's
// message. Handles (added by later versions of the C API) are owned by std::unique_ptr with a
// deleter that calls the matching mr_*_free; see medregion::unique_handle. Nothing here goes
// beyond what the C API offers.
#ifndef MEDREGION_HPP
#define MEDREGION_HPP

#include "medregion.h"

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace medregion {

/// An error returned by the C API: its status code, the status name and the message.
class Error : public std::runtime_error {
public:
    Error(mr_status status, const std::string &message)
        : std::runtime_error(std::string(mr_status_name(status)) + ": " + message), status_(status) {}
    /// The mr_status code (never MR_OK).
    mr_status status() const noexcept { return status_; }

private:
    mr_status status_;
};

/// Throws Error for any status other than MR_OK, with the calling thread's last error message.
inline void check(mr_status status) {
    if (status != MR_OK) throw Error(status, mr_last_error_message());
}

/// Owns a C handle and frees it with `Free` (a `void mr_x_free(T *)`, which accepts NULL).
template <typename T, void (*Free)(T *)>
struct handle_deleter {
    void operator()(T *p) const noexcept { Free(p); }
};
template <typename T, void (*Free)(T *)>
using unique_handle = std::unique_ptr<T, handle_deleter<T, Free>>;

/// Checks the ABI version of the header against the library. Call once, first.
inline void init() { check(mr_init(MR_ABI_VERSION)); }

/// The engine version, e.g. "0.1.0".
inline std::string version() { return mr_version_string(); }

/// One compute device.
struct Device {
    mr_device_kind kind = MR_DEVICE_CPU;
    int ordinal = 0;
    bool available = false;
    std::string name;
    std::string reason;  ///< why it is unavailable; empty when available
    std::uint64_t memory_bytes = 0;
    std::uint32_t compute_units = 0;
};

/// Every device the library lists: the CPU first, then CUDA devices (or why there are none).
inline std::vector<Device> devices() {
    std::size_t n = 0;
    check(mr_device_count(&n));
    std::vector<Device> out;
    out.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
        mr_device_desc d;
        check(mr_device_desc_default(&d));
        check(mr_device_info(i, &d));
        Device dev;
        dev.kind = d.kind;
        dev.ordinal = d.ordinal;
        dev.available = d.available != 0;
        dev.name = d.name;
        dev.reason = d.reason;
        dev.memory_bytes = d.memory_bytes;
        dev.compute_units = d.compute_units;
        out.push_back(std::move(dev));
    }
    return out;
}

/// Options for loading a model (see mr_model_params).
struct ModelParams {
    bool verify_checksum = false;  ///< recompute the content checksum (reads the whole file)
    /// "cpu", or "cuda" / "cuda:N": also upload the model to that GPU, where its sessions run
    /// (MR_ERR_UNSUPPORTED with the reason when this library or machine has no CUDA).
    std::string device = "cpu";
    /// On a GPU: the encoder's GEMMs in bf16 (production speed) instead of f32 (the CPU's report).
    bool gpu_bf16_encoder = false;
    /// On a GPU: keep f16 copies of the quantized decoder weights (faster prefill, more memory).
    bool gpu_prefill_copies = false;
};

/// A loaded model package: immutable, shareable across threads (const methods only).
class Model {
public:
    /// Maps and checks the package at `path`.
    static Model load(const std::string &path, const ModelParams &options = ModelParams()) {
        mr_model_params p = params(options);
        mr_model *m = nullptr;
        check(mr_model_load(path.c_str(), &p, &m));
        return Model(m);
    }
    /// Uses a package held in memory, in place: `data` must outlive the Model.
    static Model load_from_memory(const void *data, std::size_t len, const ModelParams &options = ModelParams()) {
        mr_model_params p = params(options);
        mr_model *m = nullptr;
        check(mr_model_load_from_memory(data, len, &p, &m));
        return Model(m);
    }
    /// Name, sizes, checksum and tokenizer kind.
    mr_model_desc info() const {
        mr_model_desc d;
        check(mr_model_desc_default(&d));
        check(mr_model_info(handle_.get(), &d));
        return d;
    }
    /// The model's configuration as JSON.
    std::string config_json() const {
        std::size_t needed = 0;
        check(mr_model_config_json(handle_.get(), nullptr, 0, &needed));
        std::string s(needed, '\0');
        check(mr_model_config_json(handle_.get(), &s[0], s.size(), &needed));
        s.resize(needed - 1);
        return s;
    }
    /// The C handle, for calls this wrapper does not cover.
    mr_model *get() const noexcept { return handle_.get(); }

private:
    explicit Model(mr_model *m) : handle_(m) {}
    static mr_model_params params(const ModelParams &options) {
        mr_model_params p;
        check(mr_model_params_default(&p));
        p.verify_checksum = options.verify_checksum ? 1 : 0;
        p.gpu_encoder = options.gpu_bf16_encoder ? MR_GPU_PRECISION_BF16 : MR_GPU_PRECISION_F32;
        p.gpu_prefill_copies = options.gpu_prefill_copies ? 1 : 0;
        const std::string &d = options.device;
        if (d == "cpu") {
            p.device_kind = MR_DEVICE_CPU;
        } else if (d == "cuda") {
            p.device_kind = MR_DEVICE_CUDA;
        } else if (d.size() > 5 && d.compare(0, 5, "cuda:") == 0 && d.size() <= 14 &&
                   d.find_first_not_of("0123456789", 5) == std::string::npos) {
            p.device_kind = MR_DEVICE_CUDA;
            p.device_ordinal = static_cast<int32_t>(std::stol(d.substr(5)));
        } else {
            throw std::invalid_argument("medregion: device \"" + d + "\" is not \"cpu\" or \"cuda[:N]\"");
        }
        return p;
    }
    unique_handle<mr_model, mr_model_free> handle_;
};

namespace detail {
// Reads a string with the size convention of the C API (size query, then the copy).
template <typename F>
std::string fetch_string(F &&copy) {
    std::size_t needed = 0;
    check(copy(static_cast<char *>(nullptr), std::size_t{0}, &needed));
    std::string s(needed, '\0');
    check(copy(&s[0], s.size(), &needed));
    s.resize(needed > 0 ? needed - 1 : 0);
    return s;
}
}  // namespace detail

/// A CT volume (mr_volume): immutable, shareable across threads.
class Volume {
public:
    /// Reads a NIfTI-1 (.nii, .nii.gz) or NRRD (.nrrd) file.
    static Volume load(const std::string &path) {
        mr_volume *v = nullptr;
        check(mr_volume_load(path.c_str(), &v));
        return Volume(v);
    }
    /// The C handle, for calls this wrapper does not cover.
    mr_volume *get() const noexcept { return handle_.get(); }

private:
    explicit Volume(mr_volume *v) : handle_(v) {}
    unique_handle<mr_volume, mr_volume_free> handle_;
};

/// Organ and lesion masks on one grid (mr_masks): shareable across threads for reading.
class Masks {
public:
    /// Reads a label map file or a folder of binary masks with the table `label_table`
    /// (MR_LABELS_*); with MR_LABELS_JSON, `label_json` is the label configuration.
    static Masks load(const std::string &path, mr_label_table label_table = MR_LABELS_TOTALSEG,
                      const std::string &label_json = std::string()) {
        mr_masks_params p;
        check(mr_masks_params_default(&p));
        p.label_table = label_table;
        p.label_table_json = label_table == MR_LABELS_JSON ? label_json.c_str() : nullptr;
        mr_masks *m = nullptr;
        check(mr_masks_load(path.c_str(), &p, &m));
        return Masks(m);
    }
    /// The masks report (JSON).
    std::string report_json() const {
        return detail::fetch_string([this](char *b, std::size_t n, std::size_t *need) {
            return mr_masks_report_json(handle_.get(), b, n, need);
        });
    }
    /// The C handle, for calls this wrapper does not cover.
    mr_masks *get() const noexcept { return handle_.get(); }

private:
    explicit Masks(mr_masks *m) : handle_(m) {}
    unique_handle<mr_masks, mr_masks_free> handle_;
};

/// A finished report (mr_report): immutable, readable from any thread.
class Report {
public:
    /// The report JSON (schema version 1, pretty-printed, ending in a newline).
    std::string json() const {
        return detail::fetch_string([this](char *b, std::size_t n, std::size_t *need) {
            return mr_report_json(handle_.get(), b, n, need);
        });
    }
    /// The plain-text report: attributes, then each region under its "Header:" line.
    std::string text() const {
        return detail::fetch_string([this](char *b, std::size_t n, std::size_t *need) {
            return mr_report_text(handle_.get(), b, n, need);
        });
    }
    /// The number of regions.
    std::size_t region_count() const {
        std::size_t n = 0;
        check(mr_report_region_count(handle_.get(), &n));
        return n;
    }
    /// The key of region `i` (throws Error with MR_ERR_INVALID_ARGUMENT out of range).
    std::string region_key(std::size_t i) const {
        return detail::fetch_string([this, i](char *b, std::size_t n, std::size_t *need) {
            return mr_report_region_key(handle_.get(), i, b, n, need);
        });
    }
    /// The generated text of region `i` (throws Error with MR_ERR_INVALID_ARGUMENT out of range).
    std::string region_text(std::size_t i) const {
        return detail::fetch_string([this, i](char *b, std::size_t n, std::size_t *need) {
            return mr_report_region_text(handle_.get(), i, b, n, need);
        });
    }
    /// The C handle, for calls this wrapper does not cover.
    mr_report *get() const noexcept { return handle_.get(); }

private:
    friend class Session;
    explicit Report(mr_report *r) : handle_(r) {}
    unique_handle<mr_report, mr_report_free> handle_;
};

/// How to create a Session (see mr_session_params).
struct SessionOptions {
    std::uint32_t context = 0;    ///< KV positions; 0 = min(the model's maximum, 4096)
    std::uint32_t threads = 0;    ///< 0 = one per core
    std::uint32_t max_batch = 8;  ///< sequences decoded together at most
    /// MR_ACTIVATIONS_INT8 (llama.cpp's scheme) or MR_ACTIVATIONS_F32 (the dequantized model's
    /// arithmetic; CPU only)
    mr_activations activations = MR_ACTIVATIONS_INT8;
};

/// What Session::generate_report runs (see mr_report_params).
struct ReportOptions {
    std::uint32_t max_new_tokens = 0;  ///< per region; 0 = the model's default
    std::vector<std::string> regions;  ///< region keys; empty = every region of the model
    int batch_regions = -1;            ///< -1 = the model's default, 0 = one by one, 1 = batched
    /// Each stage start and progress step. Return true to cancel (generate_report then throws
    /// Error with MR_ERR_CANCELLED); false to go on. Runs on the calling thread.
    std::function<bool(const mr_report_event &)> on_progress;
    /// Each piece of region text: region index, region key, the text. Return true to cancel, as
    /// above. An exception thrown by either function cancels the run and is rethrown.
    std::function<bool(std::uint32_t, const std::string &, const std::string &)> on_token;
};

/// A decoder session over a Model (mr_session): one thread at a time (a concurrent call throws
/// Error with MR_ERR_BUSY), except cancel(). Keeps the model alive.
class Session {
public:
    static Session create(const Model &model, const SessionOptions &options = SessionOptions()) {
        mr_session_params p;
        check(mr_session_params_default(&p));
        p.context = options.context;
        p.threads = options.threads;
        p.max_batch = options.max_batch;
        p.activations = options.activations;
        mr_session *s = nullptr;
        check(mr_session_create(model.get(), &p, &s));
        return Session(s);
    }
    /// Stops the running (or next) report or generation; any thread, any time.
    void cancel() const { check(mr_session_cancel(handle_.get())); }
    /// Runs the whole pipeline on `ct` and `masks` (see mr_session_generate_report).
    Report generate_report(const Volume &ct, const Masks &masks, const ReportOptions &options = ReportOptions()) {
        struct context {
            const ReportOptions *options;
            std::exception_ptr error;
        } ctx{&options, nullptr};
        mr_report_params p;
        check(mr_report_params_default(&p));
        p.max_new_tokens = options.max_new_tokens;
        p.batch_regions = options.batch_regions;
        std::string regions;
        for (const auto &r : options.regions) regions += (regions.empty() ? "" : ",") + r;
        p.regions = regions.c_str();
        p.user_data = &ctx;
        if (options.on_progress) {
            p.on_progress = [](void *user, const mr_report_event *e) -> std::int32_t {
                auto *c = static_cast<context *>(user);
                try {
                    return c->options->on_progress(*e) ? 1 : 0;
                } catch (...) {
                    c->error = std::current_exception();
                    return 1;
                }
            };
        }
        if (options.on_token) {
            p.on_token = [](void *user, std::uint32_t index, const char *region, const char *piece,
                            std::size_t len) -> std::int32_t {
                auto *c = static_cast<context *>(user);
                try {
                    return c->options->on_token(index, region, std::string(piece, len)) ? 1 : 0;
                } catch (...) {
                    c->error = std::current_exception();
                    return 1;
                }
            };
        }
        mr_report *r = nullptr;
        mr_status status = mr_session_generate_report(handle_.get(), ct.get(), masks.get(), &p, &r);
        if (ctx.error) std::rethrow_exception(ctx.error);
        check(status);
        return Report(r);
    }
    /// The C handle, for calls this wrapper does not cover.
    mr_session *get() const noexcept { return handle_.get(); }

private:
    explicit Session(mr_session *s) : handle_(s) {}
    unique_handle<mr_session, mr_session_free> handle_;
};

/// A log function: level and message. May be called from any thread the library uses.
using LogFunction = std::function<void(mr_log_level, const std::string &)>;

namespace detail {
inline std::mutex &log_mutex() {
    static std::mutex m;
    return m;
}
// Every installed function is kept alive until exit: a message already being delivered on
// another thread when the function is replaced must still find it.
inline std::vector<std::unique_ptr<LogFunction>> &log_functions() {
    static std::vector<std::unique_ptr<LogFunction>> v;
    return v;
}
extern "C" inline void log_trampoline(mr_log_level level, const char *message, void *user_data) {
    try {
        (*static_cast<LogFunction *>(user_data))(level, message);
    } catch (...) {
        // exceptions must not cross the C boundary
    }
}
}  // namespace detail

/// Routes library messages with level <= max_level to `fn`; an empty function turns logging off.
inline void set_log(LogFunction fn, mr_log_level max_level) {
    if (!fn) {
        check(mr_log_set(nullptr, MR_LOG_NONE, nullptr));
        return;
    }
    std::lock_guard<std::mutex> lock(detail::log_mutex());
    auto owned = std::make_unique<LogFunction>(std::move(fn));
    check(mr_log_set(&detail::log_trampoline, max_level, owned.get()));
    detail::log_functions().push_back(std::move(owned));
}

}  // namespace medregion

#endif  // MEDREGION_HPP
