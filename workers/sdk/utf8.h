// UTF-8 for every string jobd puts on the wire or in its journal: protobuf
// `string` fields must hold valid UTF-8 (a reader's parse fails otherwise,
// and with it the whole message: other jobs' events, a journal row). Text
// from outside (program output, HTTP headers, file names, a task's error)
// goes through MakeValidUtf8 or PercentEncodeInvalid; every cut goes
// through Utf8Prefix or ClipUtf8, which end on a character boundary.
//
// Valid means RFC 3629: no overlong forms, no surrogates (U+D800..U+DFFF),
// nothing above U+10FFFF.
//
// Thread-safety: pure functions.
#ifndef JOBD_WORKERS_SDK_UTF8_H_
#define JOBD_WORKERS_SDK_UTF8_H_

#include <cstddef>
#include <string>
#include <string_view>

#include "google/protobuf/struct.pb.h"

namespace jobd {

// The U+FFFD replacement character, in UTF-8.
inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";

bool IsValidUtf8(std::string_view s);

// The longest prefix of `s` of at most `max_bytes` bytes that does not end
// inside a character (of valid UTF-8 `s`: a valid prefix). O(1): looks at
// most at the 4 bytes around the cut.
std::string_view Utf8Prefix(std::string_view s, size_t max_bytes);

// `s` with every byte that does not belong to a valid character replaced by
// U+FFFD (so output can be up to 3x the input). Valid input is returned as
// is.
std::string MakeValidUtf8(std::string_view s);
// The same, in place; true if `s` changed.
bool MakeValidUtf8(std::string* s);

// Text of at most `max_bytes` bytes for a message: `s` made valid, then cut
// at a character boundary, "..." marking a cut (within max_bytes). Looks at
// no more than max_bytes of `s`.
std::string ClipUtf8(std::string_view s, size_t max_bytes);

// Every byte outside printable ASCII (0x20 to 0x7E) and every '%' as %XX
// (upper-case hex), so the exact bytes can be recovered
// (urllib.parse.unquote_to_bytes).
std::string PercentEncode(std::string_view s);
// PercentEncode(s) if `s` is not valid UTF-8 (*escaped set), else `s`.
std::string PercentEncodeInvalid(std::string_view s, bool* escaped = nullptr);

// Makes every string of `v` valid (values and object keys, at any depth),
// replacing invalid bytes with U+FFFD; true if anything changed. A key that
// becomes equal to another key's replaces it (last one wins).
bool MakeValidUtf8(google::protobuf::Value* v);

}  // namespace jobd

#endif  // JOBD_WORKERS_SDK_UTF8_H_
