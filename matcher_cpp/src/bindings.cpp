// matcher_cpp._matcher: Python bindings of the order book (DESIGN section 11).
//
// pybind11 defines the module, the OrderBook class and everything off the hot path. The three
// per-order calls (submit, cancel, modify) are CPython METH_FASTCALL methods attached to the same
// class, and events are a small C type with read-only slots: pybind11's generic dispatcher and its
// wrapped objects cost more than the matching itself (measured: ~0.9 us per submit with py::class_
// methods returning py::object events; see docs/BENCHMARKS.md for what this layout gets).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <structmember.h>

#include <cstring>
#include <string>

#include "matcher.hpp"
#include "workload.hpp"

namespace py = pybind11;
using namespace matcher;

namespace {

const char* const KIND_NAMES[] = {"accepted", "rejected", "trade", "cancelled", "triggered", "done"};
const char* const REASON_NAMES[] = {"",      "duplicate_id", "invalid_qty",        "invalid_price",
                                    "invalid_trigger", "unknown_order", "price_out_of_range", "user",
                                    "unfilled", "fok",          "self_trade"};
const char* const SIDE_NAMES[] = {"BUY", "SELL"};
const char* const TYPE_NAMES[] = {"LIMIT", "MARKET", "IOC", "FOK", "SL", "SL-M"};
const char* const OP_NAMES[] = {"submit", "cancel", "modify", "last_price"};
constexpr int N_KINDS = 6, N_REASONS = 11, N_SIDES = 2, N_TYPES = 6, N_OPS = 4;

PyObject* g_kind[N_KINDS];
PyObject* g_reason[N_REASONS];
PyObject* g_side[N_SIDES];
PyObject* g_type[N_TYPES];

// ---- Event: a C object with read-only slots ---------------------------------------------------
struct EventObject {
    PyObject_HEAD long long order_id;
    long long maker_id;
    long long taker_id;
    long long price;
    long long qty;
    int kind;
    int reason;
};

PyObject* event_kind(PyObject* self, void*) {
    PyObject* s = g_kind[reinterpret_cast<EventObject*>(self)->kind];
    Py_INCREF(s);
    return s;
}

PyObject* event_reason(PyObject* self, void*) {
    PyObject* s = g_reason[reinterpret_cast<EventObject*>(self)->reason];
    Py_INCREF(s);
    return s;
}

PyObject* event_tuple(EventObject* e) {
    return Py_BuildValue("(OLLLLLO)", g_kind[e->kind], e->order_id, e->maker_id, e->taker_id, e->price, e->qty,
                         g_reason[e->reason]);
}

PyObject* event_as_tuple(PyObject* self, PyObject*) { return event_tuple(reinterpret_cast<EventObject*>(self)); }

PyObject* event_repr(PyObject* self) {
    auto* e = reinterpret_cast<EventObject*>(self);
    std::string s = std::string("Event(") + KIND_NAMES[e->kind] + ", order_id=" + std::to_string(e->order_id);
    if (e->kind == TRADE)
        s += ", maker_id=" + std::to_string(e->maker_id) + ", taker_id=" + std::to_string(e->taker_id);
    s += ", price=" + std::to_string(e->price) + ", qty=" + std::to_string(e->qty);
    if (e->reason) s += std::string(", reason=") + REASON_NAMES[e->reason];
    return PyUnicode_FromString((s + ")").c_str());
}

PyTypeObject EventType;

PyObject* event_richcompare(PyObject* a, PyObject* b, int op) {
    if ((op != Py_EQ && op != Py_NE) || !PyObject_TypeCheck(b, &EventType)) Py_RETURN_NOTIMPLEMENTED;
    auto* x = reinterpret_cast<EventObject*>(a);
    auto* y = reinterpret_cast<EventObject*>(b);
    bool eq = x->kind == y->kind && x->reason == y->reason && x->order_id == y->order_id &&
              x->maker_id == y->maker_id && x->taker_id == y->taker_id && x->price == y->price && x->qty == y->qty;
    if (op == Py_NE) eq = !eq;
    if (eq) Py_RETURN_TRUE;
    Py_RETURN_FALSE;
}

PyMemberDef event_members[] = {
    {"order_id", T_LONGLONG, offsetof(EventObject, order_id), READONLY, "the order the event is about (trades: the taker)"},
    {"maker_id", T_LONGLONG, offsetof(EventObject, maker_id), READONLY, "trades: the resting order"},
    {"taker_id", T_LONGLONG, offsetof(EventObject, taker_id), READONLY, "trades: the incoming order"},
    {"price", T_LONGLONG, offsetof(EventObject, price), READONLY, "ticks: trade price, order price, trigger"},
    {"qty", T_LONGLONG, offsetof(EventObject, qty), READONLY, "trade qty, order qty, or the qty cancelled"},
    {nullptr, 0, 0, 0, nullptr}};

PyGetSetDef event_getset[] = {
    {"kind", event_kind, nullptr, "accepted, rejected, trade, cancelled, triggered or done", nullptr},
    {"reason", event_reason, nullptr, "why an order was rejected or cancelled ('' otherwise)", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

PyMethodDef event_methods[] = {
    {"as_tuple", event_as_tuple, METH_NOARGS, "(kind, order_id, maker_id, taker_id, price, qty, reason)"},
    {nullptr, nullptr, 0, nullptr}};

bool init_event_type() {
    EventType.tp_name = "matcher_cpp.Event";
    EventType.tp_basicsize = sizeof(EventObject);
    EventType.tp_flags = Py_TPFLAGS_DEFAULT;
    EventType.tp_doc = "One thing a book call caused (read-only).";
    EventType.tp_members = event_members;
    EventType.tp_getset = event_getset;
    EventType.tp_methods = event_methods;
    EventType.tp_repr = event_repr;
    EventType.tp_richcompare = event_richcompare;
    EventType.tp_hash = PyObject_HashNotImplemented;
    return PyType_Ready(&EventType) == 0;
}

/// The book's events as a list of Event objects (the book's buffer is left as is).
PyObject* events_list(const Book& b) {
    Py_ssize_t n = static_cast<Py_ssize_t>(b.events.size());
    PyObject* list = PyList_New(n);
    if (!list) return nullptr;
    for (Py_ssize_t i = 0; i < n; ++i) {
        const Event& e = b.events[static_cast<size_t>(i)];
        EventObject* o = PyObject_New(EventObject, &EventType);
        if (!o) {
            Py_DECREF(list);
            return nullptr;
        }
        o->order_id = e.order_id;
        o->maker_id = e.maker_id;
        o->taker_id = e.taker_id;
        o->price = e.price;
        o->qty = e.qty;
        o->kind = e.kind;
        o->reason = e.reason;
        PyList_SET_ITEM(list, i, reinterpret_cast<PyObject*>(o));
    }
    return list;
}

// ---- fast per-call methods --------------------------------------------------------------------
Book* self_book(PyObject* self) {
    auto* inst = reinterpret_cast<py::detail::instance*>(self);
    auto vh = inst->get_value_and_holder(nullptr, false);
    Book* b = vh ? static_cast<Book*>(vh.value_ptr()) : nullptr;
    if (!b) PyErr_SetString(PyExc_TypeError, "OrderBook.__init__ was not called");
    return b;
}

/// Index of ``obj`` in ``names`` (interned objects first, then by value); -1 with ValueError set.
int name_index(PyObject* obj, PyObject* const* interned, const char* const* names, int n, const char* what) {
    for (int i = 0; i < n; ++i)
        if (obj == interned[i]) return i;
    if (PyUnicode_Check(obj)) {
        for (int i = 0; i < n; ++i)
            if (PyUnicode_CompareWithASCIIString(obj, names[i]) == 0) return i;
    }
    std::string allowed;
    for (int i = 0; i < n; ++i) allowed += std::string(i ? ", " : "") + names[i];
    PyErr_Format(PyExc_ValueError, "%s must be one of %s, got %R", what, allowed.c_str(), obj);
    return -1;
}

/// Fills ``out`` (size n) from fastcall arguments by position or keyword; ``required`` leading ones.
bool parse_args(PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames, const char* const* names, int n,
                int required, PyObject** out, const char* fname) {
    if (nargs > n) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %d arguments (%zd given)", fname, n, nargs);
        return false;
    }
    for (int i = 0; i < n; ++i) out[i] = i < nargs ? args[i] : nullptr;
    if (kwnames) {
        Py_ssize_t nk = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t k = 0; k < nk; ++k) {
            PyObject* key = PyTuple_GET_ITEM(kwnames, k);
            int j = 0;
            for (; j < n; ++j)
                if (PyUnicode_CompareWithASCIIString(key, names[j]) == 0) break;
            if (j == n) {
                PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument %R", fname, key);
                return false;
            }
            if (out[j]) {
                PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'", fname, names[j]);
                return false;
            }
            out[j] = args[nargs + k];
        }
    }
    for (int i = 0; i < required; ++i) {
        if (!out[i]) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fname, names[i]);
            return false;
        }
    }
    return true;
}

bool as_i64(PyObject* obj, int64_t& v) {
    if (!obj) {
        v = 0;
        return true;
    }
    long long x = PyLong_AsLongLong(obj);
    if (x == -1 && PyErr_Occurred()) return false;
    v = x;
    return true;
}

const char* const SUBMIT_ARGS[] = {"order_id", "side", "order_type", "qty", "price", "trigger", "owner"};
const char* const CANCEL_ARGS[] = {"order_id"};
const char* const MODIFY_ARGS[] = {"order_id", "price", "qty", "trigger"};

PyObject* fast_submit(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    Book* b = self_book(self);
    if (!b) return nullptr;
    PyObject* a[7];
    if (!parse_args(args, nargs, kwnames, SUBMIT_ARGS, 7, 4, a, "submit")) return nullptr;
    int64_t id, qty, price, trigger, owner;
    if (!as_i64(a[0], id)) return nullptr;
    int side = name_index(a[1], g_side, SIDE_NAMES, N_SIDES, "side");
    if (side < 0) return nullptr;
    int type = name_index(a[2], g_type, TYPE_NAMES, N_TYPES, "order_type");
    if (type < 0) return nullptr;
    if (!as_i64(a[3], qty) || !as_i64(a[4], price) || !as_i64(a[5], trigger) || !as_i64(a[6], owner)) return nullptr;
    b->events.clear();
    b->submit(id, static_cast<uint8_t>(side), static_cast<uint8_t>(type), qty, price, trigger, owner);
    return events_list(*b);
}

PyObject* fast_cancel(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    Book* b = self_book(self);
    if (!b) return nullptr;
    PyObject* a[1];
    if (!parse_args(args, nargs, kwnames, CANCEL_ARGS, 1, 1, a, "cancel")) return nullptr;
    int64_t id;
    if (!as_i64(a[0], id)) return nullptr;
    b->events.clear();
    b->cancel(id);
    return events_list(*b);
}

PyObject* fast_modify(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    Book* b = self_book(self);
    if (!b) return nullptr;
    PyObject* a[4];
    if (!parse_args(args, nargs, kwnames, MODIFY_ARGS, 4, 3, a, "modify")) return nullptr;
    int64_t id, price, qty, trigger;
    if (!as_i64(a[0], id) || !as_i64(a[1], price) || !as_i64(a[2], qty) || !as_i64(a[3], trigger)) return nullptr;
    b->events.clear();
    b->modify(id, price, qty, trigger);
    return events_list(*b);
}

PyMethodDef FAST_METHODS[] = {
    {"submit", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(fast_submit)),
     METH_FASTCALL | METH_KEYWORDS,
     "submit(order_id, side, order_type, qty, price=0, trigger=0, owner=0) -> list[Event]\n\n"
     "side 'BUY'|'SELL'; order_type 'LIMIT'|'MARKET'|'IOC'|'FOK'|'SL'|'SL-M'; prices in ticks."},
    {"cancel", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(fast_cancel)),
     METH_FASTCALL | METH_KEYWORDS, "cancel(order_id) -> list[Event]"},
    {"modify", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(fast_modify)),
     METH_FASTCALL | METH_KEYWORDS,
     "modify(order_id, price, qty, trigger=0) -> list[Event]\n\n"
     "qty is the new open quantity; a price change or a larger qty loses time priority."},
    {nullptr, nullptr, 0, nullptr}};

// ---- batch ------------------------------------------------------------------------------------
using I64Array = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

/// ``obj`` as int64, refusing what would not convert exactly (floats, uint64 past int64).
I64Array as_int64(const py::object& obj, const char* name) {
    py::array raw = py::array::ensure(obj);
    if (!raw) throw py::type_error(std::string("batch: ") + name + " must be an integer array");
    char kind = raw.dtype().kind();
    if (raw.size() > 0 && kind != 'i' && kind != 'u' && kind != 'b')
        throw py::type_error(std::string("batch: ") + name + " must be an integer array, got dtype " +
                             std::string(py::str(raw.dtype())));
    if (kind == 'u' && raw.dtype().itemsize() == 8) {
        auto u = py::array_t<uint64_t, py::array::c_style | py::array::forcecast>::ensure(raw);
        for (py::ssize_t i = 0; i < u.size(); ++i)
            if (u.data()[i] > static_cast<uint64_t>(INT64_MAX))
                throw py::value_error(std::string("batch: ") + name + "[" + std::to_string(i) + "] does not fit int64");
    }
    I64Array a = I64Array::ensure(raw);
    if (!a) throw py::type_error(std::string("batch: ") + name + " must be an integer array");
    return a;
}

I64Array column(const py::object& obj, size_t n, const char* name) {
    if (obj.is_none()) {
        I64Array z(static_cast<py::ssize_t>(n));
        std::memset(z.mutable_data(), 0, n * sizeof(int64_t));
        return z;
    }
    I64Array a = as_int64(obj, name);
    if (!a) throw py::type_error(std::string("batch: ") + name + " must be an integer array");
    if (a.ndim() != 1 || static_cast<size_t>(a.shape(0)) != n)
        throw py::value_error(std::string("batch: ") + name + " must be one-dimensional with " + std::to_string(n) +
                              " items, like order_id");
    return a;
}

void check_codes(const int64_t* v, size_t n, int64_t limit, const char* name) {
    for (size_t i = 0; i < n; ++i)
        if (v[i] < 0 || v[i] >= limit)
            throw py::value_error(std::string("batch: ") + name + "[" + std::to_string(i) + "] = " +
                                  std::to_string(v[i]) + " is not a valid code (0.." + std::to_string(limit - 1) + ")");
}

/// A vector handed to numpy without a copy (the array owns it through a capsule).
template <typename T>
py::array_t<T> give(std::vector<T>&& v) {
    auto* owned = new std::vector<T>(std::move(v));
    py::capsule free_when_done(owned, [](void* p) { delete static_cast<std::vector<T>*>(p); });
    return py::array_t<T>(static_cast<py::ssize_t>(owned->size()), owned->data(), free_when_done);
}

/// Events as columns, appended op by op (the book's own buffer stays small and hot in cache).
struct Columns {
    std::vector<int64_t> index, order_id, maker_id, taker_id, price, qty;
    std::vector<uint8_t> kind, reason;
    void reserve(size_t n) {
        for (auto* v : {&index, &order_id, &maker_id, &taker_id, &price, &qty}) v->reserve(n);
        kind.reserve(n), reason.reserve(n);
    }
    void take(std::vector<Event>& ev, int64_t row) {
        for (const Event& e : ev) {
            index.push_back(row), order_id.push_back(e.order_id), maker_id.push_back(e.maker_id);
            taker_id.push_back(e.taker_id), price.push_back(e.price), qty.push_back(e.qty);
            kind.push_back(e.kind), reason.push_back(e.reason);
        }
        ev.clear();
    }
};

py::dict run_batch(Book& b, const py::object& order_id, const py::object& side, const py::object& order_type,
                   const py::object& qty, const py::object& price, const py::object& trigger, const py::object& owner,
                   const py::object& op) {
    I64Array ids = as_int64(order_id, "order_id");
    if (ids.ndim() != 1) throw py::type_error("batch: order_id must be a one-dimensional integer array");
    size_t n = static_cast<size_t>(ids.shape(0));
    I64Array sides = column(side, n, "side"), types = column(order_type, n, "order_type"), qtys = column(qty, n, "qty"),
             prices = column(price, n, "price"), trigs = column(trigger, n, "trigger"),
             owners = column(owner, n, "owner"), ops = column(op, n, "op");
    const int64_t *pid = ids.data(), *ps = sides.data(), *pt = types.data(), *pq = qtys.data(), *pp = prices.data(),
                  *ptr = trigs.data(), *pow = owners.data(), *pop = ops.data();
    check_codes(pop, n, N_OPS, "op");
    check_codes(ps, n, N_SIDES, "side");
    check_codes(pt, n, N_TYPES, "order_type");
    b.events.clear();
    Columns c;
    c.reserve(n + n / 4 + 16);
    for (size_t i = 0; i < n; ++i) {
        switch (pop[i]) {
            case OP_SUBMIT:
                b.submit(pid[i], static_cast<uint8_t>(ps[i]), static_cast<uint8_t>(pt[i]), pq[i], pp[i], ptr[i], pow[i]);
                break;
            case OP_CANCEL:
                b.cancel(pid[i]);
                break;
            case OP_MODIFY:
                b.modify(pid[i], pp[i], pq[i], ptr[i]);
                break;
            default:
                b.set_last_price(pp[i], pid[i]);
        }
        c.take(b.events, static_cast<int64_t>(i));
    }
    py::dict out;
    out["index"] = give(std::move(c.index));
    out["kind"] = give(std::move(c.kind));
    out["order_id"] = give(std::move(c.order_id));
    out["maker_id"] = give(std::move(c.maker_id));
    out["taker_id"] = give(std::move(c.taker_id));
    out["price"] = give(std::move(c.price));
    out["qty"] = give(std::move(c.qty));
    out["reason"] = give(std::move(c.reason));
    return out;
}

py::object opt_price(bool ok, int64_t p) { return ok ? py::object(py::int_(p)) : py::object(py::none()); }

py::dict order_dict(const OrderInfo& o) {
    py::dict d;
    d["order_id"] = o.id;
    d["side"] = SIDE_NAMES[o.side];
    d["order_type"] = TYPE_NAMES[o.type];
    d["price"] = o.price;
    d["qty"] = o.qty;
    d["trigger"] = o.trigger;
    d["owner"] = o.owner;
    d["state"] = o.state == RESTING ? "resting" : "stop";
    return d;
}

py::tuple names(const char* const* arr, int n) {
    py::tuple t(n);
    for (int i = 0; i < n; ++i) t[i] = py::str(arr[i]);
    return t;
}

void intern_all(PyObject** dst, const char* const* names, int n) {
    for (int i = 0; i < n; ++i) {
        dst[i] = PyUnicode_InternFromString(names[i]);
        if (!dst[i]) throw py::error_already_set();
    }
}

}  // namespace

PYBIND11_MODULE(_matcher, m) {
    m.doc() = "Price-time priority order book (one per instrument): integer tick prices and quantities.";
    intern_all(g_kind, KIND_NAMES, N_KINDS);
    intern_all(g_reason, REASON_NAMES, N_REASONS);
    intern_all(g_side, SIDE_NAMES, N_SIDES);
    intern_all(g_type, TYPE_NAMES, N_TYPES);
    if (!init_event_type()) throw py::error_already_set();
    Py_INCREF(&EventType);
    m.add_object("Event", reinterpret_cast<PyObject*>(&EventType));

    py::class_<Book> cls(m, "OrderBook", "One instrument's book. Every call returns the events it caused, in order.");
    cls.def(py::init<>())
        .def(
            "set_last_price",
            [](Book& b, int64_t price) {
                if (price <= 0 || price > MAX_PRICE) throw py::value_error("last price must be in (0, 2**40] ticks");
                b.events.clear();
                b.set_last_price(price);
                return py::reinterpret_steal<py::list>(events_list(b));
            },
            py::arg("price"), "The market's last trade price: stops trigger on it. Returns the events.")
        .def("last_price", [](const Book& b) { int64_t p = 0; bool ok = b.last_price(p); return opt_price(ok, p); })
        .def("best_bid", [](const Book& b) { int64_t p = 0; bool ok = b.best_bid(p); return opt_price(ok, p); })
        .def("best_ask", [](const Book& b) { int64_t p = 0; bool ok = b.best_ask(p); return opt_price(ok, p); })
        .def(
            "depth",
            [](const Book& b, size_t n) {
                std::vector<std::pair<int64_t, int64_t>> bids, asks;
                b.depth(n, bids, asks);
                return py::make_tuple(py::cast(bids), py::cast(asks));
            },
            py::arg("n") = 5, "(bids, asks): up to n levels per side, best first, as (price, qty).")
        .def(
            "order",
            [](const Book& b, int64_t id) -> py::object {
                OrderInfo o;
                if (!b.find(id, o)) return py::none();
                return order_dict(o);
            },
            py::arg("order_id"), "A live order (resting or a waiting stop) as a dict, or None.")
        .def(
            "orders",
            [](const Book& b) {
                py::list out;
                for (const OrderInfo& o : b.orders()) out.append(order_dict(o));
                return out;
            },
            "Every live order: bids then asks (best price first, time priority), then stops by submission.")
        .def("__len__", &Book::size)
        .def("clear", &Book::clear, "Remove every order (the last price is forgotten too).")
        .def("batch", &run_batch, py::arg("order_id"), py::arg("side") = py::none(),
             py::arg("order_type") = py::none(), py::arg("qty") = py::none(), py::arg("price") = py::none(),
             py::arg("trigger") = py::none(), py::arg("owner") = py::none(), py::arg("op") = py::none(),
             "Run many operations without Python per order. Integer arrays of one length (None: zeros); op "
             "0 submit, 1 cancel, 2 modify, 3 last price (price column); side and order_type are codes (indexes "
             "of SIDES, ORDER_TYPES). Returns a dict of arrays, one item per event: index (the row that caused "
             "it), kind and reason (indexes of KINDS, REASONS), order_id, maker_id, taker_id, price, qty. "
             "Malformed arrays raise before any row runs; a row's bad values are events (a last price out of "
             "range is rejected, invalid_price, where set_last_price raises).");
    for (PyMethodDef* d = FAST_METHODS; d->ml_name; ++d) {
        PyObject* descr = PyDescr_NewMethod(reinterpret_cast<PyTypeObject*>(cls.ptr()), d);
        if (!descr) throw py::error_already_set();
        cls.attr(d->ml_name) = py::reinterpret_steal<py::object>(descr);
    }

    m.def(
        "workload",
        [](const std::string& name, size_t n, uint64_t seed, size_t resting) {
            Stream s = generate(name, n, seed, resting);
            py::dict d;
            auto put = [&](const char* k, const std::vector<int64_t>& v) {
                py::array_t<int64_t> a(static_cast<py::ssize_t>(v.size()));
                if (!v.empty()) std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(int64_t));
                d[k] = a;
            };
            put("op", s.op), put("order_id", s.order_id), put("side", s.side), put("order_type", s.type);
            put("qty", s.qty), put("price", s.price), put("trigger", s.trigger), put("owner", s.owner);
            return d;
        },
        py::arg("name"), py::arg("n"), py::arg("seed") = 1, py::arg("resting") = 1000,
        "A deterministic benchmark op stream as batch() arrays: 'exchange_core' or 'liquibook'.");
    m.attr("KINDS") = names(KIND_NAMES, N_KINDS);
    m.attr("REASONS") = names(REASON_NAMES, N_REASONS);
    m.attr("SIDES") = names(SIDE_NAMES, N_SIDES);
    m.attr("ORDER_TYPES") = names(TYPE_NAMES, N_TYPES);
    m.attr("OPS") = names(OP_NAMES, N_OPS);
    m.attr("MAX_PRICE") = MAX_PRICE;
    m.attr("MAX_QTY") = MAX_QTY;
    m.attr("MAX_SPAN") = MAX_SPAN;
}
