// ABI test from C++17: the C header (included twice) and the RAII wrapper medregion.hpp.
#include "medregion.h"
#include "medregion.h"
#include "medregion.hpp"
#include "medregion.hpp"

#include <cstdio>
#include <cstring>
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

static int freed = 0;
static void counting_free(int *p) {
    if (p) {
        ++freed;
        delete p;
    }
}

int main() {
    // the C API is usable from C++ as is
    CHECK(mr_init(MR_ABI_VERSION) == MR_OK);
    CHECK(mr_abi_version() == MR_ABI_VERSION);

    // wrapper: init, version, devices
    medregion::init();
    CHECK(medregion::version() == mr_version_string());
    std::vector<medregion::Device> devs = medregion::devices();
    CHECK(devs.size() >= 2);
    CHECK(devs[0].kind == MR_DEVICE_CPU && devs[0].available && !devs[0].name.empty());
    for (const auto &d : devs) CHECK(d.available || !d.reason.empty());

    // errors become exceptions carrying the status and message
    bool thrown = false;
    try {
        medregion::check(mr_test_panic("cpp boom"));
    } catch (const medregion::Error &e) {
        thrown = true;
        CHECK(e.status() == MR_ERR_INTERNAL);
        CHECK(std::string(e.what()).find("cpp boom") != std::string::npos);
        CHECK(std::string(e.what()).find("MR_ERR_INTERNAL") != std::string::npos);
    }
    CHECK(thrown);

    // log through a std::function, then off
    std::vector<std::string> seen;
    medregion::set_log([&seen](mr_log_level, const std::string &m) { seen.push_back(m); }, MR_LOG_DEBUG);
    CHECK(mr_device_count(nullptr) == MR_ERR_NULL_POINTER);
    CHECK(!seen.empty() && seen.back().find("out_count") != std::string::npos);
    medregion::set_log(nullptr, MR_LOG_NONE);
    std::size_t before = seen.size();
    CHECK(mr_device_count(nullptr) == MR_ERR_NULL_POINTER);
    CHECK(seen.size() == before);

    // unique_handle frees through its deleter exactly once; an empty handle frees nothing
    {
        medregion::unique_handle<int, counting_free> h(new int(7));
        medregion::unique_handle<int, counting_free> empty;
        CHECK(*h == 7 && !empty);
    }
    CHECK(freed == 1);

    if (failures) {
        std::fprintf(stderr, "abi_test_cpp: %d check(s) failed\n", failures);
        return 1;
    }
    std::printf("abi_test_cpp: all checks passed\n");
    return 0;
}
