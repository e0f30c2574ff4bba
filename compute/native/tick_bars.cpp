// Python binding of the native 1 s bar core (compute._native.TickBarCore); the core itself is in
// tick_bars.hpp, the JSON decoding in tick_json.hpp. compute/bar_builder_native.py adapts it to the
// BarBuilder interface.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "raw_batch.hpp"
#include "tick_bars.hpp"

namespace py = pybind11;
using namespace pybind11::literals;

namespace tradestack {
namespace {

// The core plus a re-entrancy guard: stage/feed run without the GIL, so another Python thread must
// not use the same core meanwhile (the flag is only read and written with the GIL held).
struct PyTickBarCore : TickBarCore {
    using TickBarCore::TickBarCore;
    bool busy = false;
};

struct Busy {
    PyTickBarCore& c;
    explicit Busy(PyTickBarCore& core) : c(core) {
        if (c.busy) throw std::runtime_error("TickBarCore is in use by another thread");
        c.busy = true;
    }
    ~Busy() { c.busy = false; }
};

py::list bar_tuples(const std::vector<ReadyBar>& bars) {
    py::list out(bars.size());
    for (std::size_t i = 0; i < bars.size(); ++i) {
        const ReadyBar& r = bars[i];
        py::object cum = r.has_cum ? py::object(py::int_(r.cum)) : py::object(py::none());
        out[i] = py::make_tuple(r.token, r.ts, r.open, r.high, r.low, r.close, r.volume, r.ticks, cum);
    }
    return out;
}

py::list reject_list(const std::vector<Reject>& rejects) {
    py::list out(rejects.size());
    for (std::size_t i = 0; i < rejects.size(); ++i)
        out[i] = py::make_tuple(rejects[i].index, py::str(rejects[i].reason));
    return out;
}

std::vector<Reject> stage_batch(PyTickBarCore& c, const RawBatch& batch, std::int64_t max_ts, py::dict* new_out) {
    std::vector<std::pair<std::int64_t, std::int32_t>> fresh;
    std::vector<Reject> rejects;
    {
        py::gil_scoped_release nogil;
        c.stage(batch, max_ts, fresh, rejects);
    }
    if (new_out != nullptr)
        for (const auto& kv : fresh) (*new_out)[py::int_(kv.first)] = py::int_(kv.second);
    return rejects;
}

// A RawBatch over ``[(bytes|None, partition, offset)]`` for stage_items/add_items: payloads of
// ``bytes`` items are read in place (``keep`` holds references, so the bytes outlive the GIL-free
// stage even if another thread mutates the list); anything else bytes-like is copied into
// ``b.storage``. stage() copies what it keeps, so the batch may die right after it.
void fill_batch(RawBatch& b, std::vector<py::object>& keep, const py::list& items) {
    const std::size_t n = items.size();
    b.msgs.reserve(n);
    b.storage.reserve(n);
    keep.reserve(n);
    std::vector<std::pair<std::size_t, std::size_t>> copied;  // (message, storage index)
    for (std::size_t i = 0; i < n; ++i) {
        PyObject* it = PyList_GET_ITEM(items.ptr(), static_cast<Py_ssize_t>(i));
        if (!PyTuple_Check(it) || PyTuple_GET_SIZE(it) != 3)
            throw py::type_error("items must be (bytes|None, partition, offset) tuples");
        PyObject* v = PyTuple_GET_ITEM(it, 0);
        long long part = PyLong_AsLongLong(PyTuple_GET_ITEM(it, 1));
        if (part == -1 && PyErr_Occurred()) throw py::error_already_set();
        long long off = PyLong_AsLongLong(PyTuple_GET_ITEM(it, 2));
        if (off == -1 && PyErr_Occurred()) throw py::error_already_set();
        if (part < INT32_MIN || part > INT32_MAX) throw py::value_error("partition out of int32 range");
        RawMessage msg{nullptr, 0, static_cast<std::int32_t>(part), static_cast<std::int64_t>(off)};
        if (PyBytes_CheckExact(v)) {
            keep.push_back(py::reinterpret_borrow<py::object>(v));
            msg.data = PyBytes_AS_STRING(v);
            msg.len = static_cast<std::size_t>(PyBytes_GET_SIZE(v));
        } else if (v != Py_None) {
            copied.emplace_back(i, b.storage.size());
            b.storage.emplace_back(std::string(py::reinterpret_borrow<py::object>(v).cast<py::bytes>()));
        }
        b.msgs.push_back(msg);
        b.nulls.push_back(v == Py_None);
    }
    for (const auto& c : copied) {  // storage no longer grows: its strings stay put
        b.msgs[c.first].data = b.storage[c.second].data();
        b.msgs[c.first].len = b.storage[c.second].size();
    }
}

}  // namespace

void bind_tick_bars(py::module_& m) {
    py::class_<PyTickBarCore>(m, "TickBarCore",
                              "The 1 s bar core of compute.bar_builder_core.BarBuilder in C++, fed with raw tick JSON.\n\n"
                              "Per poll batch: ``new, rejects = core.stage(batch, max_ts)``; restore() the new\n"
                              "instruments; ``core.feed()``; ``core.advance(now_ms)``. Not thread-safe.")
        .def(py::init([](std::int64_t grace_ms, std::optional<std::int64_t> wall_grace_ms) {
                 if (grace_ms < 0 || (wall_grace_ms && *wall_grace_ms < 0))
                     throw py::value_error("grace must be >= 0 ms");
                 return new PyTickBarCore(grace_ms, wall_grace_ms ? *wall_grace_ms : grace_ms);
             }),
             "grace_ms"_a = 2000, "wall_grace_ms"_a = py::none())
        .def(
            "stage",
            [](PyTickBarCore& c, const RawBatch& batch, std::int64_t max_ts) {
                Busy busy(c);
                py::dict fresh;
                std::vector<Reject> rejects = stage_batch(c, batch, max_ts, &fresh);
                return py::make_tuple(fresh, reject_list(rejects));
            },
            "batch"_a, "max_ts"_a,
            "Decode and validate a batch (BarProcessor.process up to the restorer, plus add_many's checks).\n"
            "Returns ({token: partition} of valid ticks of untracked instruments, [(index, reason)] rejects).\n"
            "Keeps no reference to the batch; a second stage() before feed() replaces the staged ticks.")
        .def(
            "set_window",
            [](PyTickBarCore& c, std::int64_t now_ms, std::int64_t ahead_ms) {
                Busy busy(c);
                c.set_window(now_ms, ahead_ms);
            },
            "now_ms"_a, "ahead_ms"_a,
            "Plausibility window of the next stage() calls (BarProcessor's rule): a tick more than ahead_ms\n"
            "beyond max(its partition's watermark before the batch, now_ms) is rejected 'implausible: ...'.\n"
            "ahead_ms < 0 disables it (the default).")
        .def(
            "feed",
            [](PyTickBarCore& c) {
                Busy busy(c);
                py::gil_scoped_release nogil;
                c.feed();
            },
            "Feed the staged valid ticks in order (BarBuilder.add_many), after restore() of new instruments.")
        .def(
            "add_items",
            [](PyTickBarCore& c, const py::list& items, std::int64_t max_ts) {
                Busy busy(c);
                RawBatch b;
                std::vector<py::object> keep;
                fill_batch(b, keep, items);
                std::vector<Reject> rejects = stage_batch(c, b, max_ts, nullptr);
                {
                    py::gil_scoped_release nogil;
                    c.feed();
                }
                return reject_list(rejects);
            },
            "items"_a, "max_ts"_a = (std::int64_t(1) << 62),
            "stage(RawBatch.from_items(items), max_ts) + feed() (no restore step); returns the rejects.")
        .def(
            "stage_items",
            [](PyTickBarCore& c, const py::list& items, std::int64_t max_ts) {
                Busy busy(c);
                RawBatch b;
                std::vector<py::object> keep;
                fill_batch(b, keep, items);
                py::dict fresh;
                std::vector<Reject> rejects = stage_batch(c, b, max_ts, &fresh);
                return py::make_tuple(fresh, reject_list(rejects));
            },
            "items"_a, "max_ts"_a, "stage() of raw (bytes|None, partition, offset) items (copied).")
        .def(
            "advance",
            [](PyTickBarCore& c, std::optional<std::int64_t> now_ms) {
                Busy busy(c);
                std::vector<ReadyBar> out;
                c.advance(now_ms, out);
                return bar_tuples(out);
            },
            "now_ms"_a = py::none(),
            "BarBuilder.advance: bars as (token, ts, open, high, low, close, volume, ticks, cum_volume|None).")
        .def(
            "close_all",
            [](PyTickBarCore& c) {
                Busy busy(c);
                std::vector<ReadyBar> out;
                c.close_all(out);
                return bar_tuples(out);
            },
            "BarBuilder.close_all (same tuples as advance).")
        .def(
            "committable_offsets",
            [](PyTickBarCore& c) {
                Busy busy(c);
                std::vector<std::pair<std::int32_t, std::int64_t>> offs;
                c.committable(offs);
                py::dict d;
                for (const auto& kv : offs) d[py::int_(kv.first)] = py::int_(kv.second);
                return d;
            },
            "{partition: offset to commit} (already +1 where applicable).")
        .def(
            "restore",
            [](PyTickBarCore& c, std::int64_t token, std::int64_t last_ts, std::optional<std::int64_t> cum_volume,
               std::int32_t partition) {
                Busy busy(c);
                c.restore(token, last_ts, cum_volume, partition);
            },
            "instrument_token"_a, "last_ts"_a, "cum_volume"_a, "partition"_a = -1, "BarBuilder.restore")
        .def(
            "drop_partitions",
            [](PyTickBarCore& c, const py::iterable& partitions) {
                Busy busy(c);
                std::vector<std::int32_t> gone;
                for (const auto& p : partitions) {
                    std::int32_t x = p.cast<std::int32_t>();
                    if (std::find(gone.begin(), gone.end(), x) == gone.end()) gone.push_back(x);
                }
                c.drop_partitions(gone);
            },
            "partitions"_a, "BarBuilder.drop_partitions")
        .def(
            "is_tracked",
            [](PyTickBarCore& c, const py::object& token) {
                Busy busy(c);  // the token map may be rehashing in another thread's feed()
                // Python ``token in dict_of_int_keys``: ints and bools by value, floats when integral.
                if (py::isinstance<py::float_>(token)) {
                    double d = token.cast<double>();
                    if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0) || d != std::trunc(d)) return false;
                    return c.is_tracked(static_cast<std::int64_t>(d));
                }
                if (!py::isinstance<py::int_>(token)) return false;  // bool is an int subclass
                try {
                    return c.is_tracked(token.cast<std::int64_t>());
                } catch (const py::cast_error&) {
                    return false;  // beyond int64: never a tracked token
                }
            },
            "token"_a, "True when the instrument has per-instrument state (Python: ``token in builder._inst``).")
        .def_property_readonly("late_ticks", [](const PyTickBarCore& c) { return c.late_ticks; })
        .def_property_readonly("duplicate_ticks", [](const PyTickBarCore& c) { return c.duplicate_ticks; })
        .def_property_readonly("skipped_ticks", [](const PyTickBarCore& c) { return c.skipped_ticks; })
        .def_property_readonly("accepted_ticks", [](const PyTickBarCore& c) { return c.accepted_ticks; })
        .def_property_readonly("bars_emitted", [](const PyTickBarCore& c) { return c.bars_emitted; })
        .def_property_readonly("open_bars", [](const PyTickBarCore& c) { return c.open_bars; })
        .def_property_readonly("staged", [](const PyTickBarCore& c) { return c.staged_count(); },
                               "Number of staged ticks waiting for feed().")
        .def_property_readonly("grace_ms", [](const PyTickBarCore& c) { return c.grace_ms; })
        .def_property_readonly("wall_grace_ms", [](const PyTickBarCore& c) { return c.wall_grace_ms; });
}

}  // namespace tradestack
