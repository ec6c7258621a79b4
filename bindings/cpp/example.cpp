// Example: list medregion's version and devices through the C++ wrapper.
// Build: c++ -std=c++17 -I include -I bindings/cpp example.cpp -L target/release -lmedregion
#include "medregion.hpp"

#include <iostream>

int main() {
    try {
        medregion::init();
        medregion::set_log([](mr_log_level level, const std::string &msg) {
            std::cerr << "[medregion " << level << "] " << msg << "\n";
        }, MR_LOG_INFO);
        std::cout << "medregion " << medregion::version() << "\n";
        for (const auto &d : medregion::devices()) {
            std::cout << (d.kind == MR_DEVICE_CPU ? "cpu" : "cuda:" + std::to_string(d.ordinal)) << "  "
                      << (d.available ? d.name : "unavailable: " + d.reason) << "\n";
        }
        medregion::set_log(nullptr, MR_LOG_NONE);
    } catch (const medregion::Error &e) {
        std::cerr << "error: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
