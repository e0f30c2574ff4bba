// Benchmark workloads: deterministic op streams (arrays for OrderBook.batch) from a seed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace matcher {

struct Stream {
    std::vector<int64_t> op, order_id, side, type, qty, price, trigger, owner;
    void push(int64_t o, int64_t id, int64_t s, int64_t t, int64_t q, int64_t p, int64_t trig = 0, int64_t own = 0) {
        op.push_back(o), order_id.push_back(id), side.push_back(s), type.push_back(t), qty.push_back(q);
        price.push_back(p), trigger.push_back(trig), owner.push_back(own);
    }
    size_t size() const { return op.size(); }
};

/// ``exchange_core``: exchange-core's published mix (9% limit, 3% IOC, 6% cancel, 82% move) on a book
/// kept near ``resting`` orders; ``liquibook``: 60% limit adds around a moving mid, 30% cancels of
/// earlier adds, 10% market orders. Throws std::invalid_argument for another name.
Stream generate(const std::string& name, size_t n, uint64_t seed, size_t resting = 1000);

}  // namespace matcher
