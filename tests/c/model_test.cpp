// The model API through the C++ wrapper: RAII ownership, exceptions with status and message.
#include "medregion.hpp"

#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

static int failures = 0;
#define CHECK(cond)                                                                       \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                                   \
        }                                                                                 \
    } while (0)

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    medregion::init();
    {
        medregion::Model m = medregion::Model::load(argv[1]);
        mr_model_desc d = m.info();
        CHECK(d.n_params > 0 && std::string(d.tokenizer) == "bytes");
        std::string json = m.config_json();
        CHECK(json.size() > 100 && json.front() == '{' && json.back() == '}');
        medregion::Model moved = std::move(m);
        CHECK(moved.get() != nullptr && m.get() == nullptr);
    }
    {
        std::ifstream f(argv[1], std::ios::binary);
        std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
        medregion::ModelParams opts;
        opts.verify_checksum = true;
        medregion::Model m = medregion::Model::load_from_memory(bytes.data(), bytes.size(), opts);
        CHECK(m.info().file_bytes == bytes.size());
    }
    bool thrown = false;
    try {
        medregion::Model::load("/nonexistent/x.safetensors");
    } catch (const medregion::Error &e) {
        thrown = true;
        CHECK(e.status() == MR_ERR_IO);
        CHECK(std::string(e.what()).find("/nonexistent/x.safetensors") != std::string::npos);
    }
    CHECK(thrown);
    {
        // No CUDA in this library (or no driver): refused with the reason; a bad string throws
        // before any call.
        medregion::ModelParams opts;
        opts.device = "cuda:0";
        bool refused = false;
        try {
            medregion::Model::load(argv[1], opts);
        } catch (const medregion::Error &e) {
            refused = e.status() == MR_ERR_UNSUPPORTED &&
                      std::string(e.what()).find("cuda:0") != std::string::npos;
        }
        CHECK(refused);
        opts.device = "gpu";
        bool invalid = false;
        try {
            medregion::Model::load(argv[1], opts);
        } catch (const std::invalid_argument &) {
            invalid = true;
        }
        CHECK(invalid);
        // The GPU settings reach the params and are ignored on the CPU.
        opts.device = "cpu";
        opts.gpu_bf16_encoder = true;
        opts.gpu_prefill_copies = true;
        CHECK(medregion::Model::load(argv[1], opts).info().n_params > 0);
    }
    if (failures) return 1;
    std::printf("model_test_cpp: all checks passed\n");
    return 0;
}
