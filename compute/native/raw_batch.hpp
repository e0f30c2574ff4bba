// A batch of raw Kafka messages as the native tick path sees them: payload bytes plus provenance.
// Shared by kafka_batch.cpp (fills it from librdkafka, zero copy) and tick_bars.cpp (reads it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace tradestack {

struct RawMessage {
    const char* data;   // payload bytes (not NUL-terminated); nullptr for a null value
    std::size_t len;
    std::int32_t partition;
    std::int64_t offset;
};

// Messages in consumption order. Whoever fills ``msgs`` keeps the bytes alive while the batch lives:
// the Kafka consumer's subclass holds the librdkafka messages, ``from_items`` copies into ``storage``.
// Move-only: ``msgs`` may point into ``storage``, which a copy would not carry along (a copied
// batch read freed memory before this was explicit).
struct RawBatch {
    std::vector<RawMessage> msgs;
    std::vector<std::string> storage;
    std::vector<bool> nulls;
    RawBatch() = default;
    RawBatch(RawBatch&&) = default;
    RawBatch& operator=(RawBatch&&) = default;
    RawBatch(const RawBatch&) = delete;
    RawBatch& operator=(const RawBatch&) = delete;
    virtual ~RawBatch() = default;
};

}  // namespace tradestack
