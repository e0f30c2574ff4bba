// C++ unit tests of the order book core (no Python). Built and run by tests/unit/test_matcher_native.py
// (so `make test` runs them); by hand:
//
//   g++ -O1 -g -std=c++17 -fsanitize=address,undefined -Imatcher_cpp/src matcher_cpp/tests/test_matcher.cpp
//     matcher_cpp/src/matcher.cpp -o build/test_matcher && build/test_matcher
//
// Each test prints "ok <name>" or the failed check with its line; the exit code is the number of failures.
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "id_map.hpp"
#include "matcher.hpp"

using namespace matcher;

static int g_failures = 0;
static bool g_failed = false;

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            std::printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);              \
            g_failed = true;                                                          \
        }                                                                             \
    } while (0)

struct E {  // an expected event
    uint8_t kind;
    int64_t order_id, maker_id, taker_id, price, qty;
    uint8_t reason;
};

static bool same(const std::vector<Event>& got, const std::vector<E>& want) {
    if (got.size() != want.size()) {
        std::printf("  got %zu events, want %zu\n", got.size(), want.size());
        return false;
    }
    for (size_t i = 0; i < got.size(); ++i) {
        const Event& g = got[i];
        const E& w = want[i];
        if (g.kind != w.kind || g.order_id != w.order_id || g.maker_id != w.maker_id || g.taker_id != w.taker_id ||
            g.price != w.price || g.qty != w.qty || g.reason != w.reason) {
            std::printf("  event %zu: got kind=%d id=%lld maker=%lld taker=%lld px=%lld qty=%lld reason=%d\n", i, g.kind,
                        (long long)g.order_id, (long long)g.maker_id, (long long)g.taker_id, (long long)g.price,
                        (long long)g.qty, g.reason);
            return false;
        }
    }
    return true;
}

static E acc(int64_t id, int64_t px, int64_t q) { return {ACCEPTED, id, 0, 0, px, q, R_NONE}; }
static E trade(int64_t maker, int64_t taker, int64_t px, int64_t q) { return {TRADE, taker, maker, taker, px, q, R_NONE}; }
static E done(int64_t id) { return {DONE, id, 0, 0, 0, 0, R_NONE}; }
static E cxl(int64_t id, int64_t px, int64_t q, uint8_t why) { return {CANCELLED, id, 0, 0, px, q, why}; }
static E rej(int64_t id, int64_t px, int64_t q, uint8_t why) { return {REJECTED, id, 0, 0, px, q, why}; }
static E trig(int64_t id, int64_t px, int64_t q) { return {TRIGGERED, id, 0, 0, px, q, R_NONE}; }

// Run one call on a clean event buffer and compare.
#define EXPECT(book, call, ...)                         \
    do {                                                \
        (book).events.clear();                          \
        (book).call;                                    \
        CHECK(same((book).events, {__VA_ARGS__}));      \
    } while (0)

static void price_time_priority() {
    Book b;
    EXPECT(b, submit(1, SELL, LIMIT, 5, 101, 0, 0), acc(1, 101, 5));
    EXPECT(b, submit(2, SELL, LIMIT, 5, 100, 0, 0), acc(2, 100, 5));
    EXPECT(b, submit(3, SELL, LIMIT, 5, 100, 0, 0), acc(3, 100, 5));
    // best price first (2, 3 at 100 in arrival order), then 101
    EXPECT(b, submit(4, BUY, LIMIT, 12, 101, 0, 0), acc(4, 101, 12), trade(2, 4, 100, 5), done(2), trade(3, 4, 100, 5),
           done(3), trade(1, 4, 101, 2), done(4));
    int64_t p = 0;
    CHECK(b.best_ask(p) && p == 101);
    CHECK(!b.best_bid(p));
    CHECK(b.size() == 1);
}

static void partial_fill_rests_the_remainder() {
    Book b;
    b.submit(1, SELL, LIMIT, 3, 100, 0, 0);
    EXPECT(b, submit(2, BUY, LIMIT, 10, 100, 0, 0), acc(2, 100, 10), trade(1, 2, 100, 3), done(1));
    std::vector<std::pair<int64_t, int64_t>> bids, asks;
    b.depth(5, bids, asks);
    CHECK(bids.size() == 1 && bids[0].first == 100 && bids[0].second == 7);
    CHECK(asks.empty());
    OrderInfo o;
    CHECK(b.find(2, o) && o.qty == 7 && o.state == RESTING);
}

static void market_sweeps_levels_and_cancels_the_rest() {
    Book b;
    b.submit(1, SELL, LIMIT, 2, 100, 0, 0);
    b.submit(2, SELL, LIMIT, 2, 101, 0, 0);
    b.submit(3, SELL, LIMIT, 2, 103, 0, 0);
    EXPECT(b, submit(4, BUY, MARKET, 10, 0, 0, 0), acc(4, 0, 10), trade(1, 4, 100, 2), done(1), trade(2, 4, 101, 2),
           done(2), trade(3, 4, 103, 2), done(3), cxl(4, 0, 4, R_UNFILLED));
    CHECK(b.size() == 0);
    int64_t p = 0;
    CHECK(b.last_price(p) && p == 103);
}

static void ioc_remainder_cancelled_and_never_rests() {
    Book b;
    b.submit(1, BUY, LIMIT, 4, 100, 0, 0);
    EXPECT(b, submit(2, SELL, IOC, 10, 99, 0, 0), acc(2, 99, 10), trade(1, 2, 100, 4), done(1), cxl(2, 99, 6, R_UNFILLED));
    EXPECT(b, submit(3, SELL, IOC, 1, 99, 0, 0), acc(3, 99, 1), cxl(3, 99, 1, R_UNFILLED));
    CHECK(b.size() == 0);
}

static void fok_is_all_or_none() {
    Book b;
    b.submit(1, SELL, LIMIT, 5, 100, 0, 0);
    b.submit(2, SELL, LIMIT, 5, 102, 0, 0);
    EXPECT(b, submit(3, BUY, FOK, 8, 101, 0, 0), acc(3, 101, 8), cxl(3, 101, 8, R_FOK));  // only 5 at <= 101
    CHECK(b.size() == 2);
    EXPECT(b, submit(4, BUY, FOK, 8, 102, 0, 0), acc(4, 102, 8), trade(1, 4, 100, 5), done(1), trade(2, 4, 102, 3),
           done(4));
}

static void stops_trigger_on_last_price() {
    Book b;
    b.submit(10, SELL, LIMIT, 10, 106, 0, 0);
    EXPECT(b, submit(3, BUY, SL, 4, 106, 104, 0), acc(3, 106, 4));
    EXPECT(b, submit(1, BUY, SLM, 3, 0, 103, 0), acc(1, 0, 3));
    EXPECT(b, submit(2, SELL, SL, 2, 94, 95, 0), acc(2, 94, 2));
    EXPECT(b, set_last_price(100));  // nothing reached
    // 105 reaches both buy stops: submitted first (3) runs first, then 1; its trades at 106 change nothing else
    EXPECT(b, set_last_price(105), trig(3, 104, 4), trade(10, 3, 106, 4), done(3), trig(1, 103, 3),
           trade(10, 1, 106, 3), done(1));
    EXPECT(b, set_last_price(95), trig(2, 95, 2));  // an SL becomes a LIMIT at 94 and rests (no bids)
    OrderInfo o;
    CHECK(b.find(2, o) && o.state == RESTING && o.type == LIMIT && o.price == 94);
    // a stop already reached when it arrives triggers at once
    EXPECT(b, submit(4, SELL, SLM, 1, 0, 99, 0), acc(4, 0, 1), trig(4, 99, 1), cxl(4, 0, 1, R_UNFILLED));
}

static void trades_trigger_stops() {
    Book b;
    b.submit(1, SELL, LIMIT, 5, 100, 0, 0);
    b.submit(2, SELL, LIMIT, 5, 101, 0, 0);
    b.submit(3, BUY, SLM, 2, 0, 101, 0);  // no last price yet: waits
    EXPECT(b, submit(4, BUY, LIMIT, 6, 101, 0, 0), acc(4, 101, 6), trade(1, 4, 100, 5), done(1), trade(2, 4, 101, 1),
           done(4), trig(3, 101, 2), trade(2, 3, 101, 2), done(3));
}

static void modify_priority_rules() {
    Book b;
    b.submit(1, BUY, LIMIT, 5, 100, 0, 0);
    b.submit(2, BUY, LIMIT, 5, 100, 0, 0);
    EXPECT(b, modify(1, 100, 3, 0), acc(1, 100, 3));  // smaller: keeps its place
    EXPECT(b, submit(9, SELL, LIMIT, 1, 100, 0, 0), acc(9, 100, 1), trade(1, 9, 100, 1), done(9));
    EXPECT(b, modify(1, 100, 8, 0), acc(1, 100, 8));  // larger: to the back
    EXPECT(b, submit(10, SELL, LIMIT, 1, 100, 0, 0), acc(10, 100, 1), trade(2, 10, 100, 1), done(10));
    EXPECT(b, modify(2, 101, 4, 0), acc(2, 101, 4));  // new price: re-enters (and is best now)
    int64_t p = 0;
    CHECK(b.best_bid(p) && p == 101);
    EXPECT(b, modify(2, 100, 4, 0), acc(2, 100, 4));  // back to 100: behind 1
    EXPECT(b, submit(11, SELL, MARKET, 9, 0, 0, 0), acc(11, 0, 9), trade(1, 11, 100, 8), done(1), trade(2, 11, 100, 1),
           done(11));
    // a price change that crosses trades at once
    b.submit(12, SELL, LIMIT, 2, 105, 0, 0);
    EXPECT(b, modify(2, 105, 3, 0), acc(2, 105, 3), trade(12, 2, 105, 2), done(12));
    OrderInfo o;
    CHECK(b.find(2, o) && o.qty == 1 && o.price == 105);
}

static void cancel_unknown_or_filled_is_rejected() {
    Book b;
    EXPECT(b, cancel(42), rej(42, 0, 0, R_UNKNOWN_ORDER));
    b.submit(1, SELL, LIMIT, 5, 100, 0, 0);
    b.submit(2, BUY, LIMIT, 5, 100, 0, 0);  // fills 1 completely
    EXPECT(b, cancel(1), rej(1, 0, 0, R_UNKNOWN_ORDER));
    b.submit(3, SELL, LIMIT, 5, 100, 0, 0);
    EXPECT(b, cancel(3), cxl(3, 100, 5, R_USER));
    EXPECT(b, cancel(3), rej(3, 0, 0, R_UNKNOWN_ORDER));
    EXPECT(b, modify(3, 100, 1, 0), rej(3, 100, 1, R_UNKNOWN_ORDER));
}

static void self_trade_prevention_cancels_the_incoming_remainder() {
    Book b;
    b.submit(1, SELL, LIMIT, 5, 100, 0, 7);
    b.submit(2, SELL, LIMIT, 5, 100, 0, 8);
    EXPECT(b, submit(3, BUY, LIMIT, 8, 100, 0, 8), acc(3, 100, 8), trade(1, 3, 100, 5), done(1),
           cxl(3, 100, 3, R_SELF_TRADE));
    CHECK(b.size() == 1);  // 2 still rests, 3 did not rest
    EXPECT(b, submit(4, BUY, FOK, 5, 100, 0, 8), acc(4, 100, 5), cxl(4, 100, 5, R_FOK));
    EXPECT(b, submit(5, BUY, LIMIT, 5, 100, 0, 0), acc(5, 100, 5), trade(2, 5, 100, 5), done(2), done(5));
}

static void invalid_requests_are_rejected() {
    Book b;
    EXPECT(b, submit(1, BUY, LIMIT, 0, 100, 0, 0), rej(1, 100, 0, R_INVALID_QTY));
    EXPECT(b, submit(1, BUY, LIMIT, 5, 0, 0, 0), rej(1, 0, 5, R_INVALID_PRICE));
    EXPECT(b, submit(1, BUY, SL, 5, 100, 0, 0), rej(1, 100, 5, R_INVALID_TRIGGER));
    EXPECT(b, submit(1, BUY, MARKET, 5, 77, 0, 0), acc(1, 0, 5), cxl(1, 0, 5, R_UNFILLED));  // price ignored
    b.submit(2, BUY, LIMIT, 5, 100, 0, 0);
    EXPECT(b, submit(2, BUY, LIMIT, 5, 100, 0, 0), rej(2, 100, 5, R_DUPLICATE_ID));
    EXPECT(b, submit(3, BUY, LIMIT, 5, MAX_PRICE + 1, 0, 0), rej(3, MAX_PRICE + 1, 5, R_INVALID_PRICE));
}

static void span_limit_and_window_growth() {
    Book b;
    b.submit(1, BUY, LIMIT, 1, 5000000, 0, 0);
    b.submit(2, BUY, LIMIT, 1, 5000000 - MAX_SPAN + 1, 0, 0);  // span MAX_SPAN - 1: grows the window
    EXPECT(b, submit(3, BUY, LIMIT, 1, 5000000 - MAX_SPAN, 0, 0), acc(3, 5000000 - MAX_SPAN, 1),
           cxl(3, 5000000 - MAX_SPAN, 1, R_PRICE_OUT_OF_RANGE));
    std::vector<std::pair<int64_t, int64_t>> bids, asks;
    b.depth(5, bids, asks);
    CHECK(bids.size() == 2 && bids[0].first == 5000000 && bids[1].first == 5000000 - MAX_SPAN + 1);
    b.cancel(1);
    b.cancel(2);
    // an empty side re-centres anywhere
    EXPECT(b, submit(4, BUY, LIMIT, 1, 5, 0, 0), acc(4, 5, 1));
    EXPECT(b, submit(5, SELL, LIMIT, 1, 5, 0, 0), acc(5, 5, 1), trade(4, 5, 5, 1), done(4), done(5));
}

static void best_price_follows_emptied_levels() {
    Book b;
    for (int64_t i = 0; i < 200; ++i) b.submit(i + 1, SELL, LIMIT, 1, 1000 + i * 37, 0, 0);
    int64_t p = 0;
    for (int64_t i = 0; i < 200; ++i) {
        CHECK(b.best_ask(p) && p == 1000 + i * 37);
        b.cancel(i + 1);
    }
    CHECK(!b.best_ask(p));
}

static void id_map_survives_churn() {
    IdMap m;
    for (int64_t round = 0; round < 50; ++round) {
        for (int64_t i = 0; i < 2000; ++i) CHECK(m.insert(round * 1000 + i, uint32_t(i)));
        for (int64_t i = 0; i < 2000; i += 2) m.erase(round * 1000 + i);
        for (int64_t i = 1; i < 2000; i += 2) CHECK(m.find(round * 1000 + i) == uint32_t(i));
        for (int64_t i = 1; i < 2000; i += 2) m.erase(round * 1000 + i);
        CHECK(m.size() == 0);
    }
    CHECK(m.insert(-5, 1) && !m.insert(-5, 2) && m.find(-5) == 1);
}

static void same_calls_same_events() {
    auto run = [] {
        Book b;
        uint64_t x = 99;
        for (int64_t i = 1; i <= 20000; ++i) {
            x = x * 6364136223846793005ULL + 1;
            uint8_t side = (x >> 40) & 1, type = uint8_t((x >> 41) % 6);
            int64_t px = 1000 + int64_t((x >> 20) % 40), q = 1 + int64_t((x >> 50) % 20);
            if ((x >> 33) % 5 == 0)
                b.cancel(i - int64_t((x >> 10) % 50));
            else
                b.submit(i, side, type, q, px, px, int64_t((x >> 60) % 3));
        }
        return b.events;
    };
    auto a = run(), c = run();
    CHECK(a.size() == c.size() && a.size() > 20000);
    bool eq = a.size() == c.size();
    for (size_t i = 0; eq && i < a.size(); ++i)
        eq = a[i].kind == c[i].kind && a[i].order_id == c[i].order_id && a[i].price == c[i].price && a[i].qty == c[i].qty;
    CHECK(eq);
}

int main() {
    std::vector<std::pair<const char*, std::function<void()>>> tests = {
        {"price_time_priority", price_time_priority},
        {"partial_fill_rests_the_remainder", partial_fill_rests_the_remainder},
        {"market_sweeps_levels_and_cancels_the_rest", market_sweeps_levels_and_cancels_the_rest},
        {"ioc_remainder_cancelled_and_never_rests", ioc_remainder_cancelled_and_never_rests},
        {"fok_is_all_or_none", fok_is_all_or_none},
        {"stops_trigger_on_last_price", stops_trigger_on_last_price},
        {"trades_trigger_stops", trades_trigger_stops},
        {"modify_priority_rules", modify_priority_rules},
        {"cancel_unknown_or_filled_is_rejected", cancel_unknown_or_filled_is_rejected},
        {"self_trade_prevention_cancels_the_incoming_remainder", self_trade_prevention_cancels_the_incoming_remainder},
        {"invalid_requests_are_rejected", invalid_requests_are_rejected},
        {"span_limit_and_window_growth", span_limit_and_window_growth},
        {"best_price_follows_emptied_levels", best_price_follows_emptied_levels},
        {"id_map_survives_churn", id_map_survives_churn},
        {"same_calls_same_events", same_calls_same_events},
    };
    for (auto& [name, fn] : tests) {
        g_failed = false;
        fn();
        std::printf("%s %s\n", g_failed ? "FAILED" : "ok", name);
        g_failures += g_failed;
    }
    std::printf("%d of %zu failed\n", g_failures, tests.size());
    return g_failures;
}
