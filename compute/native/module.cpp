// compute._native: the native tick path of the 1 s bar builder (see compute/native_tick_stream.py).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>

#include "raw_batch.hpp"

namespace py = pybind11;

namespace tradestack {
void bind_kafka(py::module_& m);      // kafka_batch.cpp
void bind_tick_bars(py::module_& m);  // tick_bars.cpp
}  // namespace tradestack

PYBIND11_MODULE(_native, m) {
    using tradestack::RawBatch;
    m.doc() = "Native tick path: librdkafka batch consumer and the 1 s bar core.";
    py::class_<RawBatch>(m, "RawBatch", "Messages in consumption order: payload bytes, partition, offset.")
        .def(py::init<>())
        .def_static(
            "from_items",
            [](const py::list& items) {
                // A batch that owns copies of its payloads (tests, replays): (bytes|None, partition, offset).
                auto owned = std::make_unique<RawBatch>();  // never moved or copied: msgs point into storage
                RawBatch& b = *owned;
                b.storage.reserve(items.size());
                for (const auto& it : items) {
                    auto t = it.cast<py::tuple>();
                    bool is_null = t[0].is_none();
                    b.storage.emplace_back(is_null ? std::string() : std::string(t[0].cast<py::bytes>()));
                    b.msgs.push_back({nullptr, 0, t[1].cast<std::int32_t>(), t[2].cast<std::int64_t>()});
                    b.nulls.push_back(is_null);
                }
                for (std::size_t i = 0; i < b.msgs.size(); ++i) {
                    if (!b.nulls[i]) {
                        b.msgs[i].data = b.storage[i].data();
                        b.msgs[i].len = b.storage[i].size();
                    }
                }
                return owned;
            },
            py::arg("items"))
        .def("__len__", [](const RawBatch& b) { return b.msgs.size(); });
    tradestack::bind_kafka(m);
    tradestack::bind_tick_bars(m);
}
