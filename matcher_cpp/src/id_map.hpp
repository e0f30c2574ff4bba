// Order id -> pool slot: open addressing with linear probing and backward-shift deletion (no
// tombstones, so a long day of inserts and erases never degrades the probe length).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace matcher {

using std::size_t;

constexpr uint32_t NIL = UINT32_MAX;

class IdMap {
   public:
    IdMap() { rehash(64); }

    uint32_t find(int64_t key) const {
        for (size_t i = home(key);; i = (i + 1) & mask_) {
            const Slot& s = t_[i];
            if (s.val == NIL) return NIL;
            if (s.key == key) return s.val;
        }
    }

    /// False if ``key`` is already present (nothing changes).
    bool insert(int64_t key, uint32_t val) {
        if ((n_ + 1) * 2 > t_.size()) rehash(t_.size() * 2);
        for (size_t i = home(key);; i = (i + 1) & mask_) {
            Slot& s = t_[i];
            if (s.val == NIL) {
                s.key = key;
                s.val = val;
                ++n_;
                return true;
            }
            if (s.key == key) return false;
        }
    }

    void erase(int64_t key) {
        size_t i = home(key);
        for (;; i = (i + 1) & mask_) {
            if (t_[i].val == NIL) return;
            if (t_[i].key == key) break;
        }
        // Backward shift: pull later members of the probe run into the hole when their home allows.
        size_t j = i;
        for (;;) {
            j = (j + 1) & mask_;
            if (t_[j].val == NIL) break;
            size_t k = home(t_[j].key);
            bool movable = (j > i) ? (k <= i || k > j) : (k <= i && k > j);
            if (movable) {
                t_[i] = t_[j];
                i = j;
            }
        }
        t_[i].val = NIL;
        --n_;
    }

    size_t size() const { return n_; }

    void clear() {
        for (auto& s : t_) s.val = NIL;
        n_ = 0;
    }

   private:
    struct Slot {
        int64_t key = 0;
        uint32_t val = NIL;
    };

    size_t home(int64_t key) const {
        uint64_t x = static_cast<uint64_t>(key);  // murmur3's fmix64: sequential ids spread evenly
        x ^= x >> 33;
        x *= 0xff51afd7ed558ccdULL;
        x ^= x >> 33;
        x *= 0xc4ceb9fe1a85ec53ULL;
        x ^= x >> 33;
        return static_cast<size_t>(x) & mask_;
    }

    void rehash(size_t cap) {
        std::vector<Slot> old;
        old.swap(t_);
        t_.assign(cap, Slot{});
        mask_ = cap - 1;
        n_ = 0;
        for (const Slot& s : old)
            if (s.val != NIL) insert(s.key, s.val);
    }

    std::vector<Slot> t_;
    size_t mask_ = 0;
    size_t n_ = 0;
};

}  // namespace matcher
