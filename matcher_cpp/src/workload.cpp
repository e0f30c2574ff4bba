#include "workload.hpp"

#include <stdexcept>
#include <unordered_map>

#include "matcher.hpp"

namespace matcher {
namespace {

struct Rng {  // splitmix64: deterministic on every platform
    uint64_t s;
    uint64_t next() {
        uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
    }
    int64_t range(int64_t lo, int64_t hi) { return lo + static_cast<int64_t>(next() % uint64_t(hi - lo + 1)); }
    double unit() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }
};

/// The live ids of a generating book, with O(1) random pick and removal.
struct LiveSet {
    std::vector<int64_t> ids;
    std::unordered_map<int64_t, size_t> pos;
    void add(int64_t id) {
        if (pos.count(id)) return;
        pos[id] = ids.size();
        ids.push_back(id);
    }
    void remove(int64_t id) {
        auto it = pos.find(id);
        if (it == pos.end()) return;
        size_t i = it->second;
        pos[ids.back()] = i;
        ids[i] = ids.back();
        ids.pop_back();
        pos.erase(id);
    }
};

Stream exchange_core(size_t n, uint64_t seed, size_t resting) {
    Stream s;
    Rng rng{seed};
    Book book;
    LiveSet live;
    int64_t mid = 100000, next_id = 1;
    auto settle = [&](int64_t id) {  // what the op left in the book
        for (const Event& e : book.events) {
            if (e.kind == DONE || e.kind == CANCELLED) live.remove(e.order_id);
        }
        OrderInfo info;
        if (id && book.find(id, info)) live.add(id);
        book.events.clear();
    };
    while (s.size() < n) {
        if (rng.unit() < 0.05) mid += rng.range(-1, 1);
        double r = rng.unit();
        // Below the target size, moves and cancels turn into adds (the generator keeps ~resting orders).
        bool grow = live.ids.size() < resting, shrink = live.ids.size() > resting + resting / 5;
        if (shrink && r < 0.09) r = 0.15;  // above the target size an add becomes a cancel
        if (live.ids.empty() || r < 0.09 || (grow && r < 0.18)) {
            int64_t side = rng.range(0, 1), id = next_id++;
            int64_t off = rng.range(1, 30);
            int64_t px = side == BUY ? mid - off : mid + off;
            int64_t q = rng.range(1, 100);
            s.push(OP_SUBMIT, id, side, LIMIT, q, px);
            book.submit(id, static_cast<uint8_t>(side), LIMIT, q, px, 0, 0);
            settle(id);
        } else if (r < 0.12) {
            int64_t side = rng.range(0, 1), id = next_id++;
            int64_t px = side == BUY ? mid + rng.range(0, 3) : mid - rng.range(0, 3);
            int64_t q = rng.range(1, 60);
            s.push(OP_SUBMIT, id, side, IOC, q, px);
            book.submit(id, static_cast<uint8_t>(side), IOC, q, px, 0, 0);
            settle(0);
        } else if (r < 0.18) {
            int64_t id = live.ids[static_cast<size_t>(rng.range(0, int64_t(live.ids.size()) - 1))];
            s.push(OP_CANCEL, id, 0, 0, 0, 0);
            book.cancel(id);
            settle(0);
        } else {
            int64_t id = live.ids[static_cast<size_t>(rng.range(0, int64_t(live.ids.size()) - 1))];
            OrderInfo o;
            book.find(id, o);
            int64_t d = rng.range(1, 4) * (rng.range(0, 1) ? 1 : -1);
            int64_t px = o.price + d;
            if (px < 1) px = 1;
            s.push(OP_MODIFY, id, 0, 0, o.qty, px);
            book.modify(id, px, o.qty, 0);
            settle(id);
        }
    }
    return s;
}

Stream liquibook(size_t n, uint64_t seed) {
    Stream s;
    Rng rng{seed};
    LiveSet added;  // ids added and not yet cancelled (some will have traded: the cancel is then rejected)
    int64_t mid = 10000, next_id = 1;
    while (s.size() < n) {
        mid += rng.range(-1, 1);
        double r = rng.unit();
        if (r < 0.6 || added.ids.empty()) {
            int64_t side = rng.range(0, 1), id = next_id++;
            int64_t off = rng.range(1, 20);
            s.push(OP_SUBMIT, id, side, LIMIT, rng.range(1, 100), side == BUY ? mid - off : mid + off);
            added.add(id);
        } else if (r < 0.9) {
            int64_t id = added.ids[static_cast<size_t>(rng.range(0, int64_t(added.ids.size()) - 1))];
            added.remove(id);
            s.push(OP_CANCEL, id, 0, 0, 0, 0);
        } else {
            s.push(OP_SUBMIT, next_id++, rng.range(0, 1), MARKET, rng.range(1, 50), 0);
        }
    }
    return s;
}

}  // namespace

Stream generate(const std::string& name, size_t n, uint64_t seed, size_t resting) {
    if (name == "exchange_core") return exchange_core(n, seed, resting);
    if (name == "liquibook") return liquibook(n, seed);
    throw std::invalid_argument("unknown workload '" + name + "' (exchange_core, liquibook)");
}

}  // namespace matcher
