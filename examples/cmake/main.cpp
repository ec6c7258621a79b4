// A CMake consumer of the installed package: initialises the library, prints its version and
// lists the compute devices through the C++ wrapper (medregion.hpp).
#include <cstdio>
#include <exception>

#include "medregion.hpp"

int main() {
    try {
        medregion::init();
        std::printf("medregion %s\n", mr_version_string());
        for (const medregion::Device &d : medregion::devices()) {
            std::printf("%s %d: %s\n", d.kind == MR_DEVICE_CPU ? "cpu" : "cuda", d.ordinal,
                        d.available ? d.name.c_str() : d.reason.c_str());
        }
    } catch (const std::exception &e) {
        std::fprintf(stderr, "medregion: %s\n", e.what());
        return 1;
    }
    return 0;
}
