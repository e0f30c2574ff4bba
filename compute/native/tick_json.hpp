// Tick JSON decoding for the native 1 s bar core: validate a whole Kafka payload exactly like
// ``orjson.loads`` accepts or rejects it, and pull out the few top-level fields the bar core needs.
//
// What "exactly like orjson" means here (checked against orjson 3.x by experiment, see
// tests/unit/test_native_tick_core.py):
//   * RFC 8259 grammar: whitespace is only space/tab/LF/CR, no BOM, no trailing commas, no comments,
//     no NaN/Infinity literals, no leading zeros, no "+1", ".5" or "1." numbers, nothing after the
//     document but whitespace, at most 1024 nested containers;
//   * strings: no raw control characters (< 0x20), only the standard escapes, \uXXXX surrogates must
//     come as a high+low pair, the bytes must be valid UTF-8 (no overlongs, no encoded surrogates,
//     nothing above U+10FFFF);
//   * numbers: an integer literal in [-2**63, 2**64) is an int; anything else (fraction, exponent or
//     a bigger integer) is a float, correctly rounded; a float that rounds to infinity is an error
//     (underflow to 0.0 is fine);
//   * duplicate keys: the last one wins; keys are compared after decoding escapes.
//
// Values of the fields the core looks at become a ``Val`` (kind + 64-bit payload). Strings, arrays
// and objects in duplicate-detection fields are reduced to a canonical text (see ``canon_value``)
// whose byte equality is Python ``==`` on the decoded values, so duplicate detection compares
// exactly what ``bar_builder_core._dedup_key`` tuples compare.
#pragma once

#include <algorithm>
#include <charconv>
#include <clocale>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <locale.h>
#include <map>
#include <string>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "tick_json.hpp's 8-byte string scan assumes a little-endian target"
#endif

namespace tradestack {
namespace tickjson {

// Kinds of a decoded value (of a field the core looks at).
enum Kind : std::uint8_t {
    K_MISSING = 0,  // key absent (Python: KeyError on tick[k], None on tick.get(k))
    K_NONE,         // null
    K_BOOL,         // true/false (payload 1/0): a Python bool, == to 1/0 but not ``type(x) is int``
    K_INT,          // an int in int64 range (payload: the int64 bits)
    K_U64,          // an int in (INT64_MAX, 2**64) (payload: the uint64)
    K_DBL,          // a float (payload: the double bits)
    K_CANON,        // a string, array or object: payload is (offset << 32 | length) of its canonical text
};

struct Val {
    std::uint8_t kind = K_MISSING;
    std::uint64_t pay = 0;
};

inline std::int64_t as_i64(std::uint64_t pay) { return static_cast<std::int64_t>(pay); }
inline double as_dbl(std::uint64_t pay) {
    double d;
    std::memcpy(&d, &pay, sizeof d);
    return d;
}
inline std::uint64_t dbl_bits(double d) {
    std::uint64_t u;
    std::memcpy(&u, &d, sizeof u);
    return u;
}

// Python ``int == float`` (exact, no rounding).
inline bool int_eq_dbl(std::int64_t i, double d) {
    if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0)) return false;  // also NaN/inf
    if (d != std::trunc(d)) return false;
    return static_cast<std::int64_t>(d) == i;
}
inline bool u64_eq_dbl(std::uint64_t u, double d) {
    if (!(d >= 9223372036854775808.0 && d < 18446744073709551616.0)) return false;
    if (d != std::trunc(d)) return false;
    return static_cast<std::uint64_t>(d) == u;
}

// Python ``a == b`` for two decoded top-level values (missing and null are both None). Canonical
// texts live in ``arena_a``/``arena_b``.
inline bool val_eq(std::uint8_t ka, std::uint64_t pa, const std::string& arena_a, std::uint8_t kb, std::uint64_t pb,
                   const std::string& arena_b) {
    if (ka <= K_NONE || kb <= K_NONE) return ka <= K_NONE && kb <= K_NONE;
    if (ka == K_CANON || kb == K_CANON) {
        // A string/array/object never equals a number or bool; two of them compare canonically.
        if (ka != kb) return false;
        std::uint32_t la = static_cast<std::uint32_t>(pa), lb = static_cast<std::uint32_t>(pb);
        return la == lb && std::memcmp(arena_a.data() + (pa >> 32), arena_b.data() + (pb >> 32), la) == 0;
    }
    // Numbers (bool is an int).
    if (ka == K_DBL || kb == K_DBL) {
        if (ka == K_DBL && kb == K_DBL) return as_dbl(pa) == as_dbl(pb);
        if (ka != K_DBL) {
            std::swap(ka, kb);
            std::swap(pa, pb);
        }
        double d = as_dbl(pa);
        return kb == K_U64 ? u64_eq_dbl(pb, d) : int_eq_dbl(as_i64(pb), d);
    }
    bool ua = ka == K_U64, ub = kb == K_U64;
    if (ua != ub) return false;  // a U64 exceeds every int64
    return pa == pb;
}

// A value's numeric value as a double (for hashing): int 5 and float 5.0 hash alike.
inline double num_as_double(std::uint8_t kind, std::uint64_t pay) {
    switch (kind) {
        case K_DBL: return as_dbl(pay) == 0.0 ? 0.0 : as_dbl(pay);
        case K_U64: return static_cast<double>(pay);
        case K_INT:
        case K_BOOL: return static_cast<double>(as_i64(pay));
        default: return 0.0;
    }
}

// ------------------------------------------------------------------------------------ scanning
constexpr int kMaxDepth = 1024;  // orjson: 1024 nested containers are fine, 1025 are not

inline bool is_ws(std::uint8_t c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }
inline void skip_ws(const std::uint8_t*& p, const std::uint8_t* e) {
    while (p < e && is_ws(*p)) ++p;
}
inline bool is_digit(std::uint8_t c) { return static_cast<unsigned>(c - '0') < 10u; }

inline int hexval(std::uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}
inline bool hex4(const std::uint8_t* p, const std::uint8_t* e, unsigned& cp) {
    if (e - p < 4) return false;
    cp = 0;
    for (int i = 0; i < 4; ++i) {
        int h = hexval(p[i]);
        if (h < 0) return false;
        cp = (cp << 4) | static_cast<unsigned>(h);
    }
    return true;
}

// Length of the valid UTF-8 sequence starting at p (first byte >= 0x80), or 0 if invalid.
inline int utf8_seq(const std::uint8_t* p, const std::uint8_t* e) {
    std::uint8_t c = p[0];
    std::ptrdiff_t avail = e - p;
    auto cont = [](std::uint8_t b) { return (b & 0xC0) == 0x80; };
    if (c >= 0xC2 && c <= 0xDF) return (avail >= 2 && cont(p[1])) ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (avail < 3) return 0;
        std::uint8_t lo = 0x80, hi = 0xBF;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;  // no UTF-16 surrogates
        return (p[1] >= lo && p[1] <= hi && cont(p[2])) ? 3 : 0;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (avail < 4) return 0;
        std::uint8_t lo = 0x80, hi = 0xBF;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
        return (p[1] >= lo && p[1] <= hi && cont(p[2]) && cont(p[3])) ? 4 : 0;
    }
    return 0;
}

// Validate a string body; ``p`` is just past the opening quote and ends just past the closing one.
// ``escaped`` tells whether it contained a backslash escape.
inline bool scan_string(const std::uint8_t*& p, const std::uint8_t* e, bool& escaped, const char*& err) {
    constexpr std::uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    escaped = false;
    for (;;) {
        while (e - p >= 8) {  // 8 plain ASCII bytes at a time
            std::uint64_t w;
            std::memcpy(&w, p, 8);
            std::uint64_t q = w ^ (ones * '"'), b = w ^ (ones * '\\');
            std::uint64_t special = (((q - ones) & ~q) | ((b - ones) & ~b) | ((w - ones * 0x20) & ~w) | w) & highs;
            if (special) {
                // The lowest flagged byte is the first '"', '\\', control or non-ASCII byte (the
                // borrow tricks can only misflag bytes above a real hit).
                p += __builtin_ctzll(special) >> 3;
                break;
            }
            p += 8;
        }
        if (p >= e) {
            err = "unexpected end of data in string";
            return false;
        }
        std::uint8_t c = *p;
        if (c == '"') {
            ++p;
            return true;
        }
        if (c == '\\') {
            escaped = true;
            if (e - p < 2) {
                err = "unexpected end of data in string";
                return false;
            }
            std::uint8_t x = p[1];
            if (x == '"' || x == '\\' || x == '/' || x == 'b' || x == 'f' || x == 'n' || x == 'r' || x == 't') {
                p += 2;
                continue;
            }
            unsigned cp;
            if (x != 'u' || !hex4(p + 2, e, cp)) {
                err = "invalid escaped sequence in string";
                return false;
            }
            if (cp >= 0xDC00 && cp <= 0xDFFF) {
                err = "invalid high surrogate in string";
                return false;
            }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                unsigned lo;
                if (e - p < 12 || p[6] != '\\' || p[7] != 'u') {
                    err = "no low surrogate in string";
                    return false;
                }
                if (!hex4(p + 8, e, lo)) {
                    err = "invalid escaped sequence in string";
                    return false;
                }
                if (lo < 0xDC00 || lo > 0xDFFF) {
                    err = "invalid low surrogate in string";
                    return false;
                }
                p += 12;
                continue;
            }
            p += 6;
            continue;
        }
        if (c < 0x20) {
            err = "unexpected control character in string";
            return false;
        }
        if (c < 0x80) {
            ++p;
            continue;
        }
        int n = utf8_seq(p, e);
        if (n == 0) {
            err = "str is not valid UTF-8";
            return false;
        }
        p += n;
    }
}

inline void put_utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
        out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
        out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
        out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
}

// Decode an already validated string body [b, e) (between the quotes) into UTF-8 bytes.
inline void decode_string(const std::uint8_t* b, const std::uint8_t* e, std::string& out) {
    out.clear();
    while (b < e) {
        std::uint8_t c = *b;
        if (c != '\\') {
            out.push_back(static_cast<char>(c));
            ++b;
            continue;
        }
        std::uint8_t x = b[1];
        switch (x) {
            case 'b': out.push_back('\b'); b += 2; continue;
            case 'f': out.push_back('\f'); b += 2; continue;
            case 'n': out.push_back('\n'); b += 2; continue;
            case 'r': out.push_back('\r'); b += 2; continue;
            case 't': out.push_back('\t'); b += 2; continue;
            case 'u': break;
            default: out.push_back(static_cast<char>(x)); b += 2; continue;  // " \ /
        }
        unsigned cp = 0;
        hex4(b + 2, e, cp);
        b += 6;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            unsigned lo = 0xDC00;
            hex4(b + 2, e, lo);
            b += 6;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        put_utf8(out, cp);
    }
}

// Correctly rounded decimal -> double of a validated JSON number text. Returns false on overflow
// (orjson: "number is infinity when parsed as double"); underflow gives +-0.0 or a subnormal.
inline bool to_double(const char* b, const char* e, double& out) {
    auto r = std::from_chars(b, e, out, std::chars_format::general);
    if (r.ec == std::errc()) return true;
    // Out of range (libstdc++ does not tell overflow from underflow): ask strtod in the C locale.
    static locale_t c_locale = newlocale(LC_ALL_MASK, "C", static_cast<locale_t>(nullptr));
    std::string buf(b, e);
    out = strtod_l(buf.c_str(), nullptr, c_locale);
    return !std::isinf(out);
}

// Parse a number starting at p ('-' or a digit). Grammar errors that are not detectable here (a
// digit right after a leading 0, "1.2.3") surface as an unexpected character in the caller.
// Floats take Clinger's fast path when the decimal mantissa has at most 19 digits, is <= 2**53 and
// the decimal exponent is within +-22: then mantissa * 10**e (or / 10**-e) is one IEEE operation on
// exact operands, hence correctly rounded; anything else goes through ``to_double``.
inline bool parse_number(const std::uint8_t*& p, const std::uint8_t* e, Val& v, const char*& err) {
    static constexpr double kPow10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                          1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    const std::uint8_t* start = p;
    bool neg = false;
    if (*p == '-') {
        neg = true;
        ++p;
    }
    const std::uint8_t* ds = p;
    if (p >= e || !is_digit(*p)) {
        err = p >= e ? "unexpected end of data" : "no digit after sign";
        return false;
    }
    std::uint64_t u = 0;
    if (*p == '0') {
        ++p;
    } else {
        while (p < e && is_digit(*p)) {
            u = u * 10 + (*p - '0');  // exact for up to 19 digits; longer ones are redone below
            ++p;
        }
    }
    std::size_t ndig = static_cast<std::size_t>(p - ds);
    bool is_float = false;
    std::uint64_t m = u;  // decimal mantissa (integer and fraction digits) for the fast path
    std::size_t mdig = ndig;
    int e10 = 0;
    bool exact = ndig <= 19;
    if (p < e && *p == '.') {
        ++p;
        if (p >= e || !is_digit(*p)) {
            err = p >= e ? "unexpected end of data" : "no digit after decimal point";
            return false;
        }
        while (p < e && is_digit(*p)) {
            if (mdig < 19) {
                m = m * 10 + (*p - '0');
                ++mdig;
                --e10;
            } else {
                exact = false;
            }
            ++p;
        }
        is_float = true;
    }
    if (p < e && (*p | 0x20) == 'e') {
        ++p;
        bool eneg = false;
        if (p < e && (*p == '+' || *p == '-')) eneg = *p++ == '-';
        if (p >= e || !is_digit(*p)) {
            err = p >= e ? "unexpected end of data" : "no digit in exponent";
            return false;
        }
        int x = 0;
        while (p < e && is_digit(*p)) {
            if (x < 100000) x = x * 10 + (*p - '0');
            ++p;
        }
        e10 += eneg ? -x : x;
        is_float = true;
    }
    if (!is_float) {
        bool fits = ndig <= 19;
        if (ndig == 20) {  // up to 18446744073709551615
            u = 0;
            fits = true;
            for (const std::uint8_t* q = ds; q < ds + 20; ++q) {
                unsigned d = *q - '0';
                if (u > (UINT64_MAX - d) / 10) {
                    fits = false;
                    break;
                }
                u = u * 10 + d;
            }
        }
        if (fits) {
            if (!neg) {
                v.kind = u <= static_cast<std::uint64_t>(INT64_MAX) ? K_INT : K_U64;
                v.pay = u;
                return true;
            }
            if (u <= (static_cast<std::uint64_t>(1) << 63)) {
                v.kind = K_INT;
                v.pay = static_cast<std::uint64_t>(0) - u;  // two's complement of -u
                return true;
            }
        }
    }
    double d;
    if (exact && m <= (std::uint64_t(1) << 53) && e10 >= -22 && e10 <= 22) {
        d = static_cast<double>(m);
        d = e10 < 0 ? d / kPow10[-e10] : d * kPow10[e10];
        if (neg) d = -d;
    } else if (!to_double(reinterpret_cast<const char*>(start), reinterpret_cast<const char*>(p), d)) {
        err = "number is infinity when parsed as double";
        return false;
    }
    v.kind = K_DBL;
    v.pay = dbl_bits(d);
    return true;
}

// Validate a number without keeping it: only a long or exponent number can overflow to infinity.
inline bool skip_number(const std::uint8_t*& p, const std::uint8_t* e, const char*& err) {
    const std::uint8_t* start = p;
    if (*p == '-') ++p;
    if (p >= e || !is_digit(*p)) {
        err = p >= e ? "unexpected end of data" : "no digit after sign";
        return false;
    }
    const std::uint8_t* ds = p;
    if (*p == '0') {
        ++p;
    } else {
        while (p < e && is_digit(*p)) ++p;
    }
    std::size_t ndig = static_cast<std::size_t>(p - ds);
    bool has_exp = false;
    if (p < e && *p == '.') {
        ++p;
        if (p >= e || !is_digit(*p)) {
            err = p >= e ? "unexpected end of data" : "no digit after decimal point";
            return false;
        }
        while (p < e && is_digit(*p)) ++p;
    }
    if (p < e && (*p | 0x20) == 'e') {
        ++p;
        if (p < e && (*p == '+' || *p == '-')) ++p;
        if (p >= e || !is_digit(*p)) {
            err = p >= e ? "unexpected end of data" : "no digit in exponent";
            return false;
        }
        while (p < e && is_digit(*p)) ++p;
        has_exp = true;
    }
    if (has_exp || ndig > 300) {  // below 10**300 nothing rounds to infinity
        double d;
        if (!to_double(reinterpret_cast<const char*>(start), reinterpret_cast<const char*>(p), d)) {
            err = "number is infinity when parsed as double";
            return false;
        }
    }
    return true;
}

inline bool literal(const std::uint8_t*& p, const std::uint8_t* e, const char* word, std::size_t n,
                    const char*& err) {
    if (static_cast<std::size_t>(e - p) < n || std::memcmp(p, word, n) != 0) {
        err = static_cast<std::size_t>(e - p) < n && std::memcmp(p, word, static_cast<std::size_t>(e - p)) == 0
                  ? "unexpected end of data"
                  : "unexpected character, expected a JSON value";
        return false;
    }
    p += n;
    return true;
}

// Validate one value at p (whitespace already skipped); ``depth`` = containers enclosing it.
inline bool skip_value(const std::uint8_t*& p, const std::uint8_t* e, int depth, const char*& err) {
    if (p >= e) {
        err = "unexpected end of data";
        return false;
    }
    std::uint8_t c = *p;
    bool escaped;
    switch (c) {
        case '"': ++p; return scan_string(p, e, escaped, err);
        case 't': return literal(p, e, "true", 4, err);
        case 'f': return literal(p, e, "false", 5, err);
        case 'n': return literal(p, e, "null", 4, err);
        case '{':
        case '[': {
            if (depth + 1 > kMaxDepth) {
                err = "depth limit exceeded";
                return false;
            }
            const bool obj = c == '{';
            const std::uint8_t close = obj ? '}' : ']';
            ++p;
            skip_ws(p, e);
            if (p < e && *p == close) {
                ++p;
                return true;
            }
            for (;;) {
                if (obj) {
                    if (p >= e || *p != '"') {
                        err = p >= e ? "unexpected end of data" : "unexpected character, expected a string key";
                        return false;
                    }
                    ++p;
                    if (!scan_string(p, e, escaped, err)) return false;
                    skip_ws(p, e);
                    if (p >= e || *p != ':') {
                        err = p >= e ? "unexpected end of data" : "unexpected character, expected ':' after key";
                        return false;
                    }
                    ++p;
                    skip_ws(p, e);
                }
                if (!skip_value(p, e, depth + 1, err)) return false;
                skip_ws(p, e);
                if (p >= e) {
                    err = "unexpected end of data";
                    return false;
                }
                if (*p == ',') {
                    ++p;
                    skip_ws(p, e);
                    if (p < e && *p == close) {
                        err = "trailing comma is not allowed";
                        return false;
                    }
                    continue;
                }
                if (*p == close) {
                    ++p;
                    return true;
                }
                err = obj ? "unexpected character, expected ',' or '}'" : "unexpected character, expected ',' or ']'";
                return false;
            }
        }
        default:
            if (c == '-' || is_digit(c)) return skip_number(p, e, err);
            err = "unexpected character, expected a JSON value";
            return false;
    }
}

// ------------------------------------------------------------------------------ canonical text
// Canonical text of a validated value: byte-equal iff the decoded Python values are ==.
//   null -> "z"; numbers (bool too) -> "n<integer>;" when integral and in [-2**63, 2**64) (so 1, 1.0,
//   true and -0.0/0 meet), else "f<%.17g>;" (a non-integral or huge float equals only the same
//   float); strings -> "s<len>:<utf-8>"; arrays -> "a" elements "]"; objects -> "o" then the
//   (key, value) pairs sorted by key, duplicate keys resolved last-wins, then "}".
inline void canon_number(std::uint8_t kind, std::uint64_t pay, std::string& out) {
    char buf[40];
    int n;
    if (kind == K_INT || kind == K_BOOL) {
        n = std::snprintf(buf, sizeof buf, "n%lld;", static_cast<long long>(as_i64(pay)));
    } else if (kind == K_U64) {
        n = std::snprintf(buf, sizeof buf, "n%llu;", static_cast<unsigned long long>(pay));
    } else {
        double d = as_dbl(pay);
        if (d == std::trunc(d) && d >= -9223372036854775808.0 && d < 18446744073709551616.0) {
            if (d < 0)
                n = std::snprintf(buf, sizeof buf, "n%lld;", static_cast<long long>(d));
            else
                n = std::snprintf(buf, sizeof buf, "n%llu;", static_cast<unsigned long long>(d));
        } else {
            n = std::snprintf(buf, sizeof buf, "f%.17g;", d);
        }
    }
    out.append(buf, static_cast<std::size_t>(n));
}

inline void canon_str(const std::string& s, std::string& out) {
    out.push_back('s');
    out += std::to_string(s.size());
    out.push_back(':');
    out += s;
}

inline void canon_value(const std::uint8_t*& p, const std::uint8_t* e, std::string& out) {
    skip_ws(p, e);
    std::uint8_t c = *p;
    const char* err = nullptr;
    bool escaped;
    if (c == '"') {
        const std::uint8_t* b = ++p;
        scan_string(p, e, escaped, err);
        std::string s;
        decode_string(b, p - 1, s);
        canon_str(s, out);
    } else if (c == 't') {
        p += 4;
        out += "n1;";
    } else if (c == 'f') {
        p += 5;
        out += "n0;";
    } else if (c == 'n') {
        p += 4;
        out.push_back('z');
    } else if (c == '[') {
        ++p;
        out.push_back('a');
        skip_ws(p, e);
        if (*p == ']') {
            ++p;
        } else {
            for (;;) {
                canon_value(p, e, out);
                skip_ws(p, e);
                if (*p++ == ']') break;  // else ','
            }
        }
        out.push_back(']');
    } else if (c == '{') {
        ++p;
        std::map<std::string, std::string> members;  // sorted by key bytes; assignment = last wins
        skip_ws(p, e);
        if (*p == '}') {
            ++p;
        } else {
            for (;;) {
                skip_ws(p, e);
                const std::uint8_t* kb = ++p;
                scan_string(p, e, escaped, err);
                std::string key;
                decode_string(kb, p - 1, key);
                skip_ws(p, e);
                ++p;  // ':'
                std::string val;
                canon_value(p, e, val);
                members[std::move(key)] = std::move(val);
                skip_ws(p, e);
                if (*p++ == '}') break;  // else ','
            }
        }
        out.push_back('o');
        for (const auto& kv : members) {
            canon_str(kv.first, out);
            out += kv.second;
        }
        out.push_back('}');
    } else {
        Val v;
        parse_number(p, e, v, err);
        canon_number(v.kind, v.pay, out);
    }
}

// ---------------------------------------------------------------------------- the tick fields
enum Field : int {
    F_TOKEN = 0,
    F_TS,
    F_LTP,
    F_VOLUME,
    F_LAST_QTY,
    F_OI,
    F_BID,
    F_ASK,
    F_BID_QTY,
    F_ASK_QTY,
    N_FIELDS
};

inline int match_field(const std::uint8_t* k, std::size_t n) {
    switch (n) {
        case 2: return std::memcmp(k, "oi", 2) == 0 ? F_OI : -1;
        case 3:
            if (std::memcmp(k, "ltp", 3) == 0) return F_LTP;
            if (std::memcmp(k, "bid", 3) == 0) return F_BID;
            if (std::memcmp(k, "ask", 3) == 0) return F_ASK;
            return -1;
        case 6: return std::memcmp(k, "volume", 6) == 0 ? F_VOLUME : -1;
        case 7:
            if (std::memcmp(k, "bid_qty", 7) == 0) return F_BID_QTY;
            if (std::memcmp(k, "ask_qty", 7) == 0) return F_ASK_QTY;
            return -1;
        case 8: return std::memcmp(k, "last_qty", 8) == 0 ? F_LAST_QTY : -1;
        case 11: return std::memcmp(k, "exchange_ts", 11) == 0 ? F_TS : -1;
        case 16: return std::memcmp(k, "instrument_token", 16) == 0 ? F_TOKEN : -1;
        default: return -1;
    }
}

// Decodes one payload. Reuse one instance (it keeps a scratch buffer for escaped keys).
class TickParser {
   public:
    enum Status { OK, INVALID, NOT_OBJECT };

    Val f[N_FIELDS];
    // For K_CANON fields: the raw value text (canonicalize with ``canon_value`` when needed).
    const std::uint8_t* span_b[N_FIELDS];
    const std::uint8_t* span_e[N_FIELDS];
    const char* err = nullptr;

    Status parse(const char* data, std::size_t len) {
        for (auto& v : f) v.kind = K_MISSING;
        if (data == nullptr) {
            err = "Input must be bytes, bytearray, memoryview, or str";
            return INVALID;
        }
        const std::uint8_t* p = reinterpret_cast<const std::uint8_t*>(data);
        const std::uint8_t* e = p + len;
        if (len == 0) {
            err = "Input is a zero-length, empty document";
            return INVALID;
        }
        skip_ws(p, e);
        if (p >= e) {
            err = "input data is empty";
            return INVALID;
        }
        if (*p != '{') {
            if (!skip_value(p, e, 0, err)) return INVALID;
            skip_ws(p, e);
            if (p != e) {
                err = "unexpected content after document";
                return INVALID;
            }
            return NOT_OBJECT;
        }
        ++p;
        skip_ws(p, e);
        if (p < e && *p == '}') {
            ++p;
        } else {
            for (;;) {
                if (p >= e || *p != '"') {
                    err = p >= e ? "unexpected end of data" : "unexpected character, expected a string key";
                    return INVALID;
                }
                const std::uint8_t* kb = ++p;
                bool escaped;
                if (!scan_string(p, e, escaped, err)) return INVALID;
                int field;
                if (!escaped) {
                    field = match_field(kb, static_cast<std::size_t>(p - 1 - kb));
                } else {
                    decode_string(kb, p - 1, key_);
                    field = match_field(reinterpret_cast<const std::uint8_t*>(key_.data()), key_.size());
                }
                skip_ws(p, e);
                if (p >= e || *p != ':') {
                    err = p >= e ? "unexpected end of data" : "unexpected character, expected ':' after key";
                    return INVALID;
                }
                ++p;
                skip_ws(p, e);
                if (p >= e) {
                    err = "unexpected end of data";
                    return INVALID;
                }
                if (field < 0) {
                    if (!skip_value(p, e, 1, err)) return INVALID;
                } else if (!field_value(p, e, field)) {
                    return INVALID;
                }
                skip_ws(p, e);
                if (p >= e) {
                    err = "unexpected end of data";
                    return INVALID;
                }
                if (*p == ',') {
                    ++p;
                    skip_ws(p, e);
                    if (p < e && *p == '}') {
                        err = "trailing comma is not allowed";
                        return INVALID;
                    }
                    continue;
                }
                if (*p == '}') {
                    ++p;
                    break;
                }
                err = "unexpected character, expected ',' or '}'";
                return INVALID;
            }
        }
        skip_ws(p, e);
        if (p != e) {
            err = "unexpected content after document";
            return INVALID;
        }
        return OK;
    }

   private:
    std::string key_;

    bool field_value(const std::uint8_t*& p, const std::uint8_t* e, int field) {
        Val& v = f[field];
        std::uint8_t c = *p;
        if (c == '-' || is_digit(c)) return parse_number(p, e, v, err);
        switch (c) {
            case 't':
                v.kind = K_BOOL;
                v.pay = 1;
                return literal(p, e, "true", 4, err);
            case 'f':
                v.kind = K_BOOL;
                v.pay = 0;
                return literal(p, e, "false", 5, err);
            case 'n':
                v.kind = K_NONE;
                return literal(p, e, "null", 4, err);
            case '"':
            case '{':
            case '[':
                span_b[field] = p;
                v.kind = K_CANON;
                if (!skip_value(p, e, 1, err)) return false;
                span_e[field] = p;
                return true;
            default:
                err = "unexpected character, expected a JSON value";
                return false;
        }
    }
};

}  // namespace tickjson
}  // namespace tradestack
