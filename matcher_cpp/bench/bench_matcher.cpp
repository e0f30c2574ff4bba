// The C++ core alone (no Python): ops/s on the benchmark workloads, and cancels at one level.
//
//   g++ -O3 -std=c++17 -Imatcher_cpp/src matcher_cpp/bench/bench_matcher.cpp matcher_cpp/src/matcher.cpp \
//       matcher_cpp/src/workload.cpp -o build/bench_matcher && build/bench_matcher [runs]
//
// Prints one JSON object per line: {"case": ..., "ops": n, "seconds": [...]} (tests/bench/bench_matcher.py
// builds and runs it and turns the lines into the BENCHMARKS.md table).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "matcher.hpp"
#include "workload.hpp"

using namespace matcher;
using Clock = std::chrono::steady_clock;

static size_t sink = 0;  // keeps the optimiser from dropping the work

static double replay(const Stream& s) {
    Book b;
    b.events.reserve(1 << 16);
    auto t0 = Clock::now();
    for (size_t i = 0; i < s.size(); ++i) {
        switch (s.op[i]) {
            case OP_SUBMIT:
                b.submit(s.order_id[i], uint8_t(s.side[i]), uint8_t(s.type[i]), s.qty[i], s.price[i], s.trigger[i],
                         s.owner[i]);
                break;
            case OP_CANCEL:
                b.cancel(s.order_id[i]);
                break;
            case OP_MODIFY:
                b.modify(s.order_id[i], s.price[i], s.qty[i], s.trigger[i]);
                break;
            default:
                b.set_last_price(s.price[i]);
        }
        if (b.events.size() > 60000) sink += b.events.size(), b.events.clear();
    }
    double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    sink += b.events.size() + b.size();
    return dt;
}

/// Every op of the stream timed on its own: nanoseconds per op, sorted (the clock read included, ~20 ns).
static std::vector<int64_t> latencies(const Stream& s) {
    Book b;
    b.events.reserve(1 << 16);
    std::vector<int64_t> ns(s.size());
    for (size_t i = 0; i < s.size(); ++i) {
        auto t0 = Clock::now();
        switch (s.op[i]) {
            case OP_SUBMIT:
                b.submit(s.order_id[i], uint8_t(s.side[i]), uint8_t(s.type[i]), s.qty[i], s.price[i], s.trigger[i],
                         s.owner[i]);
                break;
            case OP_CANCEL:
                b.cancel(s.order_id[i]);
                break;
            case OP_MODIFY:
                b.modify(s.order_id[i], s.price[i], s.qty[i], s.trigger[i]);
                break;
            default:
                b.set_last_price(s.price[i]);
        }
        b.events.clear();
        ns[i] = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count();
    }
    std::sort(ns.begin(), ns.end());
    return ns;
}

static void report(const char* name, size_t ops, const std::vector<double>& secs) {
    std::printf("{\"case\": \"%s\", \"ops\": %zu, \"seconds\": [", name, ops);
    for (size_t i = 0; i < secs.size(); ++i) std::printf("%s%.6f", i ? ", " : "", secs[i]);
    std::printf("]}\n");
    std::fflush(stdout);
}

int main(int argc, char** argv) {
    int runs = argc > 1 ? std::atoi(argv[1]) : 5;
    size_t n = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 5000000;
    for (const char* name : {"exchange_core", "liquibook"}) {
        Stream s = generate(name, n, 1);
        std::vector<double> secs;
        for (int r = 0; r < runs; ++r) secs.push_back(replay(s));
        report(name, s.size(), secs);
    }
    // Inserts only, nothing crossing, into books of 100k resting orders (liquibook's published figure is
    // inserts/s); a new book every 100k inserts, its construction outside the timer.
    {
        std::vector<double> secs;
        for (int r = 0; r < runs; ++r) {
            double total = 0;
            for (size_t start = 0; start < n; start += 100000) {
                Book b;
                b.events.reserve(1 << 17);
                size_t end = std::min(n, start + 100000);
                auto t0 = Clock::now();
                for (size_t i = start; i < end; ++i) {
                    int64_t side = i & 1, px = side ? 100100 + int64_t(i % 500) : 99900 - int64_t(i % 500);
                    b.submit(int64_t(i + 1), uint8_t(side), LIMIT, 10, px, 0, 0);
                }
                total += std::chrono::duration<double>(Clock::now() - t0).count();
                sink += b.events.size();
            }
            secs.push_back(total);
        }
        report("inserts_no_cross", n, secs);
    }
    // 30k orders at one price, then every one cancelled in random order (timed: the cancels).
    {
        const size_t k = 30000;
        std::vector<int64_t> order(k);
        for (size_t i = 0; i < k; ++i) order[i] = int64_t(i + 1);
        uint64_t x = 12345;
        for (size_t i = k - 1; i > 0; --i) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            std::swap(order[i], order[(x >> 33) % (i + 1)]);
        }
        std::vector<double> secs;
        for (int r = 0; r < runs; ++r) {
            Book b;
            for (size_t i = 0; i < k; ++i) b.submit(int64_t(i + 1), BUY, LIMIT, 10, 1000, 0, 0);
            b.events.clear();
            auto t0 = Clock::now();
            for (int64_t id : order) b.cancel(id);
            secs.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
            sink += b.events.size();
        }
        report("cancel_30k_one_level", k, secs);
    }
    {
        Stream s = generate("exchange_core", n < 2000000 ? n : 2000000, 2);
        auto ns = latencies(s);
        auto pct = [&](double q) { return ns[static_cast<size_t>(q * double(ns.size() - 1))]; };
        std::printf("{\"case\": \"latency_exchange_core\", \"ops\": %zu, \"p50_ns\": %lld, \"p99_ns\": %lld, "
                    "\"p999_ns\": %lld}\n", ns.size(), (long long)pct(0.5), (long long)pct(0.99), (long long)pct(0.999));
    }
    std::fprintf(stderr, "checksum %zu\n", sink);
    return 0;
}
