// The order book of matcher.hpp (semantics listed there).
#include "matcher.hpp"

#include <algorithm>

namespace matcher {

uint32_t Book::alloc() {
    if (!free_.empty()) {
        uint32_t i = free_.back();
        free_.pop_back();
        return i;
    }
    pool_.emplace_back();
    return static_cast<uint32_t>(pool_.size() - 1);
}

void Book::submit(int64_t id, uint8_t side, uint8_t type, int64_t qty, int64_t price, int64_t trigger,
                  int64_t owner) {
    bool priced = type == LIMIT || type == IOC || type == FOK || type == SL;
    bool stop = type == SL || type == SLM;
    if (!priced) price = 0;
    if (!stop) trigger = 0;
    if (qty <= 0 || qty > MAX_QTY) return emit(REJECTED, id, price, qty, R_INVALID_QTY);
    if (priced && (price <= 0 || price > MAX_PRICE)) return emit(REJECTED, id, price, qty, R_INVALID_PRICE);
    if (stop && (trigger <= 0 || trigger > MAX_PRICE)) return emit(REJECTED, id, price, qty, R_INVALID_TRIGGER);
    if (ids_.find(id) != NIL) return emit(REJECTED, id, price, qty, R_DUPLICATE_ID);
    uint64_t seq = ++seq_;
    emit(ACCEPTED, id, price, qty);
    if (stop && !(has_last_ && triggers(side, trigger, last_))) {
        uint32_t i = alloc();
        pool_[i] = Order{id, price, qty, owner, trigger, seq, NIL, NIL, side, type, STOP};
        ids_.insert(id, i);
        add_stop(i);
        return;  // nothing traded: no stop can have become triggerable
    }
    if (stop) {
        emit(TRIGGERED, id, trigger, qty);
        type = type == SL ? LIMIT : MARKET;
    }
    execute(id, side, type, qty, price, owner, seq);
    run_stops();
}

void Book::execute(int64_t id, uint8_t side, uint8_t type, int64_t qty, int64_t price, int64_t owner,
                   uint64_t seq) {
    bool market = type == MARKET;
    if (type == FOK && !fillable(side, price, qty, owner)) return emit(CANCELLED, id, price, qty, R_FOK);
    bool stp = false;
    int64_t rem = sweep(id, side, market, price, qty, owner, stp);
    if (rem == 0) return emit(DONE, id, 0, 0);
    if (stp) return emit(CANCELLED, id, price, rem, R_SELF_TRADE);
    if (type != LIMIT) return emit(CANCELLED, id, price, rem, R_UNFILLED);
    Ladder& own = side == BUY ? bids_ : asks_;
    if (!own.reserve(price)) return emit(CANCELLED, id, price, rem, R_PRICE_OUT_OF_RANGE);
    uint32_t i = alloc();
    pool_[i] = Order{id, price, rem, owner, 0, seq, NIL, NIL, side, LIMIT, RESTING};
    ids_.insert(id, i);
    rest(i);
}

int64_t Book::sweep(int64_t id, uint8_t side, bool market, int64_t limit, int64_t qty, int64_t owner, bool& stp) {
    Ladder& opp = side == BUY ? asks_ : bids_;
    while (qty > 0 && !opp.empty()) {
        int64_t px = opp.best_price();
        if (!market && (side == BUY ? px > limit : px < limit)) break;
        Level& lv = opp.at(px);
        uint32_t i = lv.head;
        while (i != NIL) {
            Order& m = pool_[i];
            if (owner != 0 && m.owner == owner) {
                stp = true;
                return qty;
            }
            int64_t q = m.qty < qty ? m.qty : qty;
            m.qty -= q;
            lv.qty -= q;
            qty -= q;
            last_ = px;
            has_last_ = true;
            emit(TRADE, id, px, q, R_NONE, m.id, id);
            if (m.qty != 0) break;  // the taker is done
            uint32_t nx = m.next;
            lv.head = nx;
            if (nx != NIL)
                pool_[nx].prev = NIL;
            else
                lv.tail = NIL;
            int64_t mid = m.id;
            ids_.erase(mid);
            release(i);
            emit(DONE, mid, 0, 0);
            i = nx;
            if (qty == 0) break;
        }
        if (lv.head == NIL) opp.mark_empty(px);
    }
    return qty;
}

bool Book::fillable(uint8_t side, int64_t limit, int64_t qty, int64_t owner) const {
    const Ladder& opp = side == BUY ? asks_ : bids_;
    if (opp.empty()) return false;
    int64_t px = opp.best_price();
    for (;;) {
        if (side == BUY ? px > limit : px < limit) return false;
        const Level& lv = opp.at(px);
        if (owner == 0) {
            qty -= lv.qty;
        } else {
            for (uint32_t i = lv.head; i != NIL && qty > 0; i = pool_[i].next) {
                if (pool_[i].owner == owner) return false;  // matching would stop here
                qty -= pool_[i].qty;
            }
        }
        if (qty <= 0) return true;
        if (!opp.next_worse(px, px)) return false;
    }
}

void Book::rest(uint32_t i) {
    Order& o = pool_[i];
    Ladder& own = o.side == BUY ? bids_ : asks_;
    Level& lv = own.at(o.price);
    o.next = NIL;
    o.prev = lv.tail;
    if (lv.tail != NIL)
        pool_[lv.tail].next = i;
    else
        lv.head = i;
    lv.tail = i;
    bool was_empty = o.prev == NIL;
    lv.qty += o.qty;
    if (was_empty) own.mark_nonempty(o.price);
}

void Book::unlink(uint32_t i) {
    Order& o = pool_[i];
    Ladder& own = o.side == BUY ? bids_ : asks_;
    Level& lv = own.at(o.price);
    if (o.prev != NIL)
        pool_[o.prev].next = o.next;
    else
        lv.head = o.next;
    if (o.next != NIL)
        pool_[o.next].prev = o.prev;
    else
        lv.tail = o.prev;
    lv.qty -= o.qty;
    if (lv.head == NIL) own.mark_empty(o.price);
}

void Book::add_stop(uint32_t i) {
    const Order& o = pool_[i];
    (o.side == BUY ? buy_stops_ : sell_stops_).emplace(std::make_pair(o.trigger, o.seq), i);
}

void Book::remove_stop(const Order& o) {
    (o.side == BUY ? buy_stops_ : sell_stops_).erase(std::make_pair(o.trigger, o.seq));
}

void Book::run_stops() {
    while (has_last_) {
        uint32_t pick = NIL;
        uint64_t pick_seq = 0;
        // BUY stops trigger at last >= trigger (the lowest triggers first in the map), SELL at last <= trigger.
        for (auto it = buy_stops_.begin(); it != buy_stops_.end() && it->first.first <= last_; ++it)
            if (pick == NIL || it->first.second < pick_seq) pick = it->second, pick_seq = it->first.second;
        for (auto it = sell_stops_.rbegin(); it != sell_stops_.rend() && it->first.first >= last_; ++it)
            if (pick == NIL || it->first.second < pick_seq) pick = it->second, pick_seq = it->first.second;
        if (pick == NIL) return;
        Order o = pool_[pick];
        remove_stop(o);
        ids_.erase(o.id);
        release(pick);
        emit(TRIGGERED, o.id, o.trigger, o.qty);
        execute(o.id, o.side, o.type == SL ? LIMIT : MARKET, o.qty, o.price, o.owner, o.seq);
    }
}

void Book::cancel(int64_t id) {
    uint32_t i = ids_.find(id);
    if (i == NIL) return emit(REJECTED, id, 0, 0, R_UNKNOWN_ORDER);
    Order& o = pool_[i];
    if (o.state == RESTING)
        unlink(i);
    else
        remove_stop(o);
    emit(CANCELLED, id, o.price, o.qty, R_USER);
    ids_.erase(id);
    release(i);
}

void Book::modify(int64_t id, int64_t price, int64_t qty, int64_t trigger) {
    uint32_t i = ids_.find(id);
    if (i == NIL) return emit(REJECTED, id, price, qty, R_UNKNOWN_ORDER);
    Order& o = pool_[i];
    bool priced = o.state == RESTING || o.type == SL;
    if (!priced) price = 0;
    if (qty <= 0 || qty > MAX_QTY) return emit(REJECTED, id, price, qty, R_INVALID_QTY);
    if (priced && (price <= 0 || price > MAX_PRICE)) return emit(REJECTED, id, price, qty, R_INVALID_PRICE);
    if (o.state == STOP) {
        if (trigger == 0) trigger = o.trigger;
        if (trigger < 0 || trigger > MAX_PRICE) return emit(REJECTED, id, price, qty, R_INVALID_TRIGGER);
        bool keeps = price == o.price && trigger == o.trigger && qty <= o.qty;
        remove_stop(o);
        o.price = price;
        o.trigger = trigger;
        o.qty = qty;
        if (!keeps) o.seq = ++seq_;
        add_stop(i);
        emit(ACCEPTED, id, price, qty);
        return run_stops();
    }
    if (price == o.price) {
        Level& lv = (o.side == BUY ? bids_ : asks_).at(price);
        if (qty <= o.qty) {  // keeps its place
            lv.qty -= o.qty - qty;
            o.qty = qty;
        } else {  // to the back of its level
            unlink(i);
            o.qty = qty;
            rest(i);
        }
        return emit(ACCEPTED, id, price, qty);
    }
    uint8_t side = o.side;
    int64_t owner = o.owner;
    unlink(i);
    ids_.erase(id);
    release(i);
    emit(ACCEPTED, id, price, qty);
    execute(id, side, LIMIT, qty, price, owner, ++seq_);
    run_stops();
}

void Book::set_last_price(int64_t price, int64_t id) {
    if (price <= 0 || price > MAX_PRICE) return emit(REJECTED, id, price, 0, R_INVALID_PRICE);
    last_ = price;
    has_last_ = true;
    run_stops();
}

void Book::depth(size_t n, std::vector<std::pair<int64_t, int64_t>>& bids,
                 std::vector<std::pair<int64_t, int64_t>>& asks) const {
    for (int s = 0; s < 2; ++s) {
        const Ladder& l = s == 0 ? bids_ : asks_;
        auto& out = s == 0 ? bids : asks;
        if (l.empty() || n == 0) continue;
        int64_t px = l.best_price();
        do {
            out.emplace_back(px, l.at(px).qty);
        } while (out.size() < n && l.next_worse(px, px));
    }
}

bool Book::find(int64_t id, OrderInfo& out) const {
    uint32_t i = ids_.find(id);
    if (i == NIL) return false;
    out = info(pool_[i]);
    return true;
}

std::vector<OrderInfo> Book::orders() const {
    std::vector<OrderInfo> out;
    out.reserve(ids_.size());
    for (int s = 0; s < 2; ++s) {
        const Ladder& l = s == 0 ? bids_ : asks_;
        if (l.empty()) continue;
        int64_t px = l.best_price();
        do {
            for (uint32_t i = l.at(px).head; i != NIL; i = pool_[i].next) out.push_back(info(pool_[i]));
        } while (l.next_worse(px, px));
    }
    std::vector<std::pair<uint64_t, uint32_t>> stops;
    for (const auto& kv : buy_stops_) stops.emplace_back(kv.first.second, kv.second);
    for (const auto& kv : sell_stops_) stops.emplace_back(kv.first.second, kv.second);
    std::sort(stops.begin(), stops.end());
    for (const auto& s : stops) out.push_back(info(pool_[s.second]));
    return out;
}

void Book::clear() {
    bids_.clear();
    asks_.clear();
    pool_.clear();
    free_.clear();
    ids_.clear();
    buy_stops_.clear();
    sell_stops_.clear();
    has_last_ = false;
    last_ = 0;
}

}  // namespace matcher
