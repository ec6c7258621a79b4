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
        return p;
    }
    unique_handle<mr_model, mr_model_free> handle_;
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
