// report_example: the whole pipeline through the C++ wrapper -- the same program as
// examples/c/report.c (same arguments, same output).
//
//     report_example MODEL CT MASKS [totalseg|radgenome|LABELS.json]
//
// MEDREGION_MAX_NEW_TOKENS, when set, caps the tokens per region. Progress goes to stderr, the
// report text to stdout.
// Build: c++ -std=c++17 -I include -I bindings/cpp bindings/cpp/report_example.cpp
//            -L target/release -lmedregion -o report_example
#include "medregion.hpp"

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

int main(int argc, char **argv) {
    if (argc < 4 || argc > 5) {
        std::cerr << "usage: " << argv[0] << " MODEL CT MASKS [totalseg|radgenome|LABELS.json]\n";
        return 2;
    }
    static const char *const stages[] = {"Preprocess", "Attributes", "Encoder", "Tokens", "Region"};
    try {
        medregion::init();
        const std::string labels = argc > 4 ? argv[4] : "totalseg";
        mr_label_table table = MR_LABELS_TOTALSEG;
        std::string label_json;
        if (labels == "radgenome") {
            table = MR_LABELS_RADGENOME;
        } else if (labels != "totalseg") {
            std::ifstream in(labels, std::ios::binary);
            if (!in) {
                std::cerr << "error: cannot read " << labels << "\n";
                return 1;
            }
            std::ostringstream buf;
            buf << in.rdbuf();
            label_json = buf.str();
            table = MR_LABELS_JSON;
        }
        auto model = medregion::Model::load(argv[1]);
        auto ct = medregion::Volume::load(argv[2]);
        auto masks = medregion::Masks::load(argv[3], table, label_json);
        auto session = medregion::Session::create(model);
        medregion::ReportOptions options;
        if (const char *n = std::getenv("MEDREGION_MAX_NEW_TOKENS"))
            options.max_new_tokens = static_cast<std::uint32_t>(std::strtoul(n, nullptr, 10));
        options.on_progress = [](const mr_report_event &e) {
            if (e.kind != MR_REPORT_EVENT_STAGE) return false;  // encoder slices: not shown
            std::cerr << "[" << stages[e.stage] << "] ";
            if (e.region)
                std::cerr << e.region << " (" << e.index + 1 << "/" << e.count << ")\n";
            else
                std::cerr << "(" << e.count << ")\n";
            return false;  // true would cancel
        };
        std::cout << session.generate_report(ct, masks, options).text();
    } catch (const medregion::Error &e) {
        std::cerr << "error: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
