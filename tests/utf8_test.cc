// Unit tests of the UTF-8 helpers (workers/utf8.h): validity as protobuf
// sees it, and cuts at every byte offset of 2-, 3- and 4-byte characters.
#include "workers/sdk/utf8.h"

#include <string>

#include "gmock/gmock.h"
#include "google/protobuf/struct.pb.h"
#include "gtest/gtest.h"

namespace jobd {
namespace {

using google::protobuf::Value;

// Whether protobuf itself accepts `s` in a string field: a Value holding it
// must serialize and parse back (proto3 parsers refuse invalid UTF-8).
bool ProtobufAccepts(const std::string& s) {
  Value v;
  v.set_string_value(s);
  std::string bytes;
  v.SerializeToString(&bytes);
  Value back;
  return back.ParseFromString(bytes) && back.string_value() == s;
}

const char* const kChars[] = {"\xC3\xA9",           // é, 2 bytes
                              "\xE2\x82\xAC",       // €, 3 bytes
                              "\xF0\x9F\x98\x80"};  // 😀, 4 bytes

TEST(Utf8Test, ValidityMatchesProtobuf) {
  const std::string samples[] = {
      "",
      "plain ascii",
      "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80",
      "\xEF\xBF\xBF",      // U+FFFF
      "\xF4\x8F\xBF\xBF",  // U+10FFFF
      std::string("nul\0in", 6),
      "\xFF\xFE",          // the reported header bytes
      "\x80",              // lone continuation
      "\xC3",              // truncated
      "\xC0\x80",          // overlong NUL
      "\xE0\x80\x80",      // overlong
      "\xED\xA0\x80",      // surrogate U+D800
      "\xF4\x90\x80\x80",  // above U+10FFFF
      "\xF5\x80\x80\x80",
      "abcdefgh\xE2\x82",  // truncated after an ASCII word
  };
  for (const std::string& s : samples) {
    EXPECT_EQ(IsValidUtf8(s), ProtobufAccepts(s)) << testing::PrintToString(s);
  }
}

TEST(Utf8Test, PrefixAtEveryOffsetOfEveryCharacterWidth) {
  for (const char* ch : kChars) {
    const std::string c = ch;
    // The reported case: 127 ASCII bytes then the character, cut at 128.
    for (size_t lead : {size_t{0}, size_t{1}, size_t{7}, size_t{127}}) {
      const std::string s = std::string(lead, 'a') + c + "z";
      for (size_t max = 0; max <= s.size() + 1; ++max) {
        const std::string_view p = Utf8Prefix(s, max);
        EXPECT_TRUE(IsValidUtf8(p)) << c.size() << " " << lead << " " << max;
        EXPECT_LE(p.size(), max);
        EXPECT_EQ(s.compare(0, p.size(), p), 0);
        // The longest such prefix: the whole character iff it fits.
        const size_t expected = max <= lead             ? max
                                : max < lead + c.size() ? lead
                                : max <= s.size()       ? max
                                                        : s.size();
        EXPECT_EQ(p.size(), expected) << c.size() << " " << lead << " " << max;
        const std::string clipped = ClipUtf8(s, max);
        EXPECT_TRUE(IsValidUtf8(clipped));
        EXPECT_LE(clipped.size(), max);
        EXPECT_TRUE(ProtobufAccepts(clipped));
      }
    }
  }
}

TEST(Utf8Test, MakeValidReplacesEachBadByteAndKeepsTheRest) {
  EXPECT_EQ(MakeValidUtf8("ok \xC3\xA9"), "ok \xC3\xA9");
  EXPECT_EQ(MakeValidUtf8("a\xFF\xFE"
                          "b"),
            "a\xEF\xBF\xBD\xEF\xBF\xBD"
            "b");
  // A character cut at every offset: each stray byte becomes U+FFFD.
  for (const char* ch : kChars) {
    const std::string c = ch;
    for (size_t cut = 1; cut < c.size(); ++cut) {
      const std::string s = "x" + c.substr(0, cut) + "y";
      const std::string fixed = MakeValidUtf8(s);
      EXPECT_TRUE(IsValidUtf8(fixed));
      EXPECT_THAT(fixed, testing::StartsWith("x"));
      EXPECT_THAT(fixed, testing::EndsWith("y"));
      EXPECT_NE(fixed.find(kReplacementChar), std::string::npos);
    }
  }
  std::string in_place = "\xED\xA0\x80";
  EXPECT_TRUE(MakeValidUtf8(&in_place));
  EXPECT_EQ(in_place, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_FALSE(MakeValidUtf8(&in_place));
}

TEST(Utf8Test, ClipMarksCutsAndStaysWithinTheLimit) {
  EXPECT_EQ(ClipUtf8("short", 64), "short");
  EXPECT_EQ(ClipUtf8("abcdefghij", 8), "abcde...");
  // Replacement growth past the limit is cut too.
  const std::string bad(20, '\xFF');
  const std::string clipped = ClipUtf8(bad, 16);
  EXPECT_LE(clipped.size(), 16u);
  EXPECT_TRUE(IsValidUtf8(clipped));
  EXPECT_THAT(clipped, testing::EndsWith("..."));
  EXPECT_EQ(ClipUtf8("\xC3\xA9\xC3\xA9", 2), "\xC3\xA9");
}

TEST(Utf8Test, PercentEncodingIsReversibleAndOnlyForInvalidText) {
  bool escaped = true;
  EXPECT_EQ(PercentEncodeInvalid("50% caf\xC3\xA9", &escaped),
            "50% caf\xC3\xA9");
  EXPECT_FALSE(escaped);
  EXPECT_EQ(PercentEncodeInvalid("a%\xFF\xFE\r", &escaped), "a%25%FF%FE%0D");
  EXPECT_TRUE(escaped);
}

TEST(Utf8Test, MakeValidWalksValuesAndKeys) {
  Value v;
  auto& fields = *v.mutable_struct_value()->mutable_fields();
  fields["good"].set_string_value("fine");
  fields["bad\xFF"].set_string_value("x\xFEy");
  Value* list = &fields["list"];
  list->mutable_list_value()->add_values()->set_string_value("\xC3");
  list->mutable_list_value()->add_values()->set_number_value(1);
  EXPECT_TRUE(MakeValidUtf8(&v));
  std::string bytes;
  ASSERT_TRUE(v.SerializeToString(&bytes));
  Value back;
  ASSERT_TRUE(back.ParseFromString(bytes));
  const auto& f = back.struct_value().fields();
  EXPECT_EQ(f.at("good").string_value(), "fine");
  EXPECT_EQ(f.at("bad\xEF\xBF\xBD").string_value(), "x\xEF\xBF\xBDy");
  EXPECT_EQ(f.at("list").list_value().values(0).string_value(), "\xEF\xBF\xBD");
  EXPECT_FALSE(MakeValidUtf8(&v));
}

}  // namespace
}  // namespace jobd
