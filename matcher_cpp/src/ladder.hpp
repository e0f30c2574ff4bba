// One side of a book: a dense array of price levels indexed by (price - lo), with a two-level
// bitset of non-empty levels. Finding a level is an index, never a search; the next best price
// after a level empties is a word scan (64 levels at a time, 4096 per summary word).
//
// The window grows (doubling, re-centred) to cover a new price, as long as the prices resting on
// the side span less than MAX_SPAN ticks; a side with nothing resting re-centres for free.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "id_map.hpp"

namespace matcher {

/// The widest range of prices (in ticks) that may rest on one side at once.
constexpr int64_t MAX_SPAN = int64_t(1) << 21;

struct Level {
    uint32_t head = NIL;
    uint32_t tail = NIL;
    int64_t qty = 0;
};

class Ladder {
   public:
    explicit Ladder(bool bids) : bids_(bids) {}

    bool empty() const { return min_ < 0; }
    /// Best price: highest bid / lowest ask (only when !empty()).
    int64_t best_price() const { return lo_ + (bids_ ? max_ : min_); }
    int64_t best_index() const { return bids_ ? max_ : min_; }
    int64_t min_price() const { return lo_ + min_; }
    int64_t max_price() const { return lo_ + max_; }

    Level& at(int64_t price) { return lv_[static_cast<size_t>(price - lo_)]; }
    const Level& at(int64_t price) const { return lv_[static_cast<size_t>(price - lo_)]; }

    /// The level at ``price`` if the window covers it (possibly empty), else nullptr.
    const Level* find(int64_t price) const {
        if (lv_.empty() || price < lo_ || price >= lo_ + static_cast<int64_t>(lv_.size())) return nullptr;
        return &lv_[static_cast<size_t>(price - lo_)];
    }

    /// Make ``price`` addressable; false if resting there would span MAX_SPAN ticks or more.
    bool reserve(int64_t price) {
        if (!empty()) {
            int64_t mn = std::min(min_price(), price), mx = std::max(max_price(), price);
            if (mx - mn >= MAX_SPAN) return false;
        }
        if (lv_.empty()) {
            allocate(kInitial, price - static_cast<int64_t>(kInitial / 2));
            return true;
        }
        int64_t size = static_cast<int64_t>(lv_.size());
        if (price >= lo_ && price < lo_ + size) return true;
        if (empty()) {  // nothing resting: move the window, no copy (every level is empty)
            lo_ = price - size / 2;
            return true;
        }
        grow(price);
        return true;
    }

    /// A level at ``price`` (reserved) has just become non-empty.
    void mark_nonempty(int64_t price) {
        int64_t i = price - lo_;
        size_t w = static_cast<size_t>(i >> 6);
        if (bits_[w] == 0) sum_[w >> 6] |= uint64_t(1) << (w & 63);
        bits_[w] |= uint64_t(1) << (i & 63);
        if (min_ < 0 || i < min_) min_ = i;
        if (max_ < 0 || i > max_) max_ = i;
    }

    /// The level at ``price`` has just become empty.
    void mark_empty(int64_t price) {
        int64_t i = price - lo_;
        size_t w = static_cast<size_t>(i >> 6);
        bits_[w] &= ~(uint64_t(1) << (i & 63));
        if (bits_[w] == 0) sum_[w >> 6] &= ~(uint64_t(1) << (w & 63));
        if (i == min_ && i == max_) {
            min_ = max_ = -1;
        } else if (i == min_) {
            min_ = next_at_or_above(i + 1);
        } else if (i == max_) {
            max_ = prev_at_or_below(i - 1);
        }
    }

    /// The next worse non-empty price after ``price`` (lower for bids, higher for asks); false if none.
    bool next_worse(int64_t price, int64_t& out) const {
        int64_t i = price - lo_;
        int64_t j = bids_ ? prev_at_or_below(i - 1) : next_at_or_above(i + 1);
        if (j < 0) return false;
        out = lo_ + j;
        return true;
    }

    /// Empty the side and give its memory back (a far price once grew it): the next reserve starts small.
    void clear() {
        std::vector<Level>().swap(lv_);
        std::vector<uint64_t>().swap(bits_);
        std::vector<uint64_t>().swap(sum_);
        lo_ = 0;
        min_ = max_ = -1;
    }

   private:
    static constexpr size_t kInitial = 1024;
    static constexpr size_t kMaxSize = size_t(1) << 22;  // 2 x MAX_SPAN: a window that fits any legal side

    void allocate(size_t size, int64_t lo) {
        lv_.assign(size, Level{});
        bits_.assign(size / 64, 0);
        sum_.assign((size / 64 + 63) / 64, 0);
        lo_ = lo;
        min_ = max_ = -1;
    }

    void grow(int64_t price) {
        int64_t mn = std::min(min_price(), price), mx = std::max(max_price(), price);
        int64_t need = mx - mn + 1;
        size_t size = lv_.size();
        while (static_cast<int64_t>(size) < 2 * need && size < kMaxSize) size *= 2;
        int64_t new_lo = mn - (static_cast<int64_t>(size) - need) / 2;
        std::vector<Level> old;
        old.swap(lv_);
        int64_t old_lo = lo_, old_min = min_, old_max = max_;
        allocate(size, new_lo);
        for (int64_t i = old_min; i <= old_max; ++i) {
            const Level& l = old[static_cast<size_t>(i)];
            if (l.head == NIL) continue;
            int64_t p = old_lo + i;
            lv_[static_cast<size_t>(p - lo_)] = l;
            mark_nonempty(p);
        }
    }

    int64_t next_at_or_above(int64_t i) const {
        int64_t n = static_cast<int64_t>(lv_.size());
        if (i >= n) return -1;
        if (i < 0) i = 0;
        size_t w = static_cast<size_t>(i >> 6);
        uint64_t m = bits_[w] & (~uint64_t(0) << (i & 63));
        if (m) return static_cast<int64_t>((w << 6) | __builtin_ctzll(m));
        ++w;
        if (w >= bits_.size()) return -1;
        size_t sw = w >> 6;
        uint64_t sm = sum_[sw] & (~uint64_t(0) << (w & 63));
        while (!sm) {
            if (++sw >= sum_.size()) return -1;
            sm = sum_[sw];
        }
        w = (sw << 6) | __builtin_ctzll(sm);
        return static_cast<int64_t>((w << 6) | __builtin_ctzll(bits_[w]));
    }

    int64_t prev_at_or_below(int64_t i) const {
        if (i < 0) return -1;
        int64_t n = static_cast<int64_t>(lv_.size());
        if (i >= n) i = n - 1;
        size_t w = static_cast<size_t>(i >> 6);
        uint64_t m = bits_[w] & (~uint64_t(0) >> (63 - (i & 63)));
        if (m) return static_cast<int64_t>((w << 6) | (63 - __builtin_clzll(m)));
        if (w == 0) return -1;
        --w;
        size_t sw = w >> 6;
        uint64_t sm = sum_[sw] & (~uint64_t(0) >> (63 - (w & 63)));
        while (!sm) {
            if (sw == 0) return -1;
            sm = sum_[--sw];
        }
        w = (sw << 6) | (63 - __builtin_clzll(sm));
        return static_cast<int64_t>((w << 6) | (63 - __builtin_clzll(bits_[w])));
    }

    bool bids_;
    int64_t lo_ = 0;
    std::vector<Level> lv_;
    std::vector<uint64_t> bits_, sum_;
    int64_t min_ = -1, max_ = -1;  // lowest / highest non-empty index, -1 when the side is empty
};

}  // namespace matcher
