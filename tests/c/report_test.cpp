// The C++ report wrapper (bindings/cpp/medregion.hpp): a report, cancellation by returning true
// from either std::function, an exception thrown inside a callback rethrown as itself,
// Session::cancel() from another thread, a bad region key as medregion::Error, and the session
// usable after every failure.
//
//     report_test_cpp MODEL CT MASKS
#include "medregion.hpp"

#include <atomic>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <thread>

static int failures = 0;

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            ++failures;                                                      \
        }                                                                    \
    } while (0)

/// Runs `f`, which must throw medregion::Error with `status`; returns its message.
template <typename F>
static std::string expect_error(mr_status status, F f) {
    try {
        f();
    } catch (const medregion::Error &e) {
        CHECK(e.status() == status);
        if (e.status() != status) std::fprintf(stderr, "  got %s\n", e.what());
        return e.what();
    }
    CHECK(!"no medregion::Error thrown");
    return "";
}

int main(int argc, char **argv) {
    if (argc != 4) {
        std::fprintf(stderr, "usage: %s MODEL CT MASKS\n", argv[0]);
        return 2;
    }
    medregion::init();
    auto model = medregion::Model::load(argv[1]);
    auto ct = medregion::Volume::load(argv[2]);
    auto masks = medregion::Masks::load(argv[3], MR_LABELS_TOTALSEG, "");
    auto session = medregion::Session::create(model);

    medregion::ReportOptions options;
    options.max_new_tokens = 3;
    options.regions = {"lung", "osseous"};
    int stages = 0, pieces = 0;
    options.on_progress = [&](const mr_report_event &e) {
        stages += e.kind == MR_REPORT_EVENT_STAGE;
        return false;
    };
    options.on_token = [&](std::uint32_t index, const std::string &key, const std::string &text) {
        CHECK(index < 2);
        CHECK(key == (index == 0 ? "lung" : "osseous"));
        CHECK(!text.empty());
        ++pieces;
        return false;
    };
    const medregion::Report first = session.generate_report(ct, masks, options);
    CHECK(first.region_count() == 2);
    CHECK(first.region_key(0) == "lung" && first.region_key(1) == "osseous");
    CHECK(first.text().find("\nLung:\n") != std::string::npos);
    CHECK(first.json().find("\"schema_version\": 1") != std::string::npos);
    CHECK(stages == 4 + 2);  // preprocess, attributes, encoder, tokens, two regions
    CHECK(pieces >= 2);

    // Returning true from on_progress cancels at once.
    medregion::ReportOptions cancel_progress = options;
    int after = 0;
    cancel_progress.on_progress = [&](const mr_report_event &e) {
        ++after;
        return e.stage == MR_STAGE_ENCODER;
    };
    cancel_progress.on_token = nullptr;
    expect_error(MR_ERR_CANCELLED, [&] { session.generate_report(ct, masks, cancel_progress); });
    CHECK(after == 3);  // preprocess, attributes, encoder: nothing after the one that asked

    // Returning true from on_token: no piece after it.
    medregion::ReportOptions cancel_token = options;
    int tokens_after = 0;
    cancel_token.on_token = [&](std::uint32_t, const std::string &, const std::string &) {
        ++tokens_after;
        return true;
    };
    expect_error(MR_ERR_CANCELLED, [&] { session.generate_report(ct, masks, cancel_token); });
    CHECK(tokens_after == 1);

    // An exception inside a callback cancels the run and comes out as itself.
    medregion::ReportOptions throwing = options;
    throwing.on_progress = [](const mr_report_event &e) -> bool {
        if (e.stage == MR_STAGE_TOKENS) throw std::runtime_error("from the callback");
        return false;
    };
    bool rethrown = false;
    try {
        session.generate_report(ct, masks, throwing);
    } catch (const std::runtime_error &e) {
        rethrown = std::string(e.what()) == "from the callback";
    }
    CHECK(rethrown);

    // Session::cancel() from another thread, while the report runs (the callback waits for it).
    std::atomic<bool> cancelled{false};
    medregion::ReportOptions waiting = options;
    waiting.on_progress = [&](const mr_report_event &e) {
        if (e.kind == MR_REPORT_EVENT_STAGE && e.stage == MR_STAGE_TOKENS) {
            std::thread t([&] {
                session.cancel();
                cancelled = true;
            });
            t.join();
        }
        return false;
    };
    expect_error(MR_ERR_CANCELLED, [&] { session.generate_report(ct, masks, waiting); });
    CHECK(cancelled);

    // A bad region key names the key.
    medregion::ReportOptions bad = options;
    bad.regions = {"spleen"};
    const std::string msg = expect_error(MR_ERR_INVALID_ARGUMENT, [&] { session.generate_report(ct, masks, bad); });
    CHECK(msg.find("spleen") != std::string::npos);

    // The session still works, with the same result as the first time.
    const medregion::Report again = session.generate_report(ct, masks, options);
    CHECK(again.text() == first.text());
    CHECK(again.region_text(1) == first.region_text(1));

    if (failures) {
        std::fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    std::printf("report_test_cpp: all checks passed\n");
    return 0;
}
