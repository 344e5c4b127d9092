#include "workers/reactor/address_policy.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace jobd {
namespace {

struct Range {
  uint32_t base;
  int prefix;
  const char* what;
};

// IPv4 ranges that are not public unicast (see the header).
constexpr Range kIpv4Refused[] = {
    {0x00000000, 8, "an unspecified address"},
    {0x0A000000, 8, "a private address"},
    {0x64400000, 10, "a private (shared, CGNAT) address"},
    {0x7F000000, 8, "a loopback address"},
    {0xA9FE0000, 16, "a link-local address"},
    {0xAC100000, 12, "a private address"},
    {0xC0000000, 24, "a reserved address"},
    {0xC0A80000, 16, "a private address"},
    {0xC6120000, 15, "a reserved address"},
    {0xE0000000, 4, "a multicast address"},
    {0xF0000000, 4, "a reserved or broadcast address"},
};

bool InPrefix(const uint8_t* a, const uint8_t* net, int prefix) {
  const int whole = prefix / 8;
  if (std::memcmp(a, net, whole) != 0) return false;
  const int rest = prefix % 8;
  if (rest == 0) return true;
  const uint8_t mask = static_cast<uint8_t>(0xFF << (8 - rest));
  return (a[whole] & mask) == (net[whole] & mask);
}

const char* Ipv4Refusal(uint32_t host_order) {
  for (const Range& r : kIpv4Refused) {
    const uint32_t mask = r.prefix == 0 ? 0 : ~uint32_t{0} << (32 - r.prefix);
    if ((host_order & mask) == r.base) return r.what;
  }
  return nullptr;
}

// The IPv4 address an IPv6 address stands for (mapped ::ffff:a.b.c.d,
// compatible ::a.b.c.d, NAT64 64:ff9b::a.b.c.d), if any.
bool EmbeddedIpv4(const in6_addr& a, uint32_t* host_order) {
  const uint8_t* b = a.s6_addr;
  static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0,    0,
                                          0, 0, 0, 0, 0xFF, 0xFF};
  static constexpr uint8_t kZero[12] = {};
  static constexpr uint8_t kNat64[12] = {0, 0x64, 0xFF, 0x9B, 0, 0,
                                         0, 0,    0,    0,    0, 0};
  if (std::memcmp(b, kMapped, 12) != 0 && std::memcmp(b, kZero, 12) != 0 &&
      std::memcmp(b, kNat64, 12) != 0) {
    return false;
  }
  uint32_t v;
  std::memcpy(&v, b + 12, 4);
  *host_order = ntohl(v);
  return true;
}

const char* Ipv6Refusal(const in6_addr& a) {
  const uint8_t* b = a.s6_addr;
  if (IN6_IS_ADDR_UNSPECIFIED(&a)) return "an unspecified address";
  if (IN6_IS_ADDR_LOOPBACK(&a)) return "a loopback address";
  uint32_t v4;
  if (EmbeddedIpv4(a, &v4)) return Ipv4Refusal(v4);
  if (b[0] == 0xFE && (b[1] & 0xC0) == 0x80) return "a link-local address";
  if (b[0] == 0xFE && (b[1] & 0xC0) == 0xC0) return "a private address";
  if ((b[0] & 0xFE) == 0xFC) return "a private address";
  if (b[0] == 0xFF) return "a multicast address";
  return nullptr;
}

}  // namespace

absl::StatusOr<AddressPolicy> AddressPolicy::Parse(
    const std::vector<std::string>& allow) {
  AddressPolicy p;
  for (const std::string& entry : allow) {
    if (entry.empty()) continue;
    auto bad = [&entry]() {
      return absl::InvalidArgumentError(
          absl::StrCat("--http-allow: '", entry,
                       "' is not a host name, an IP address or a CIDR "
                       "network (e.g. 10.0.0.0/8, fd00::/8)"));
    };
    std::string address = entry;
    int prefix = -1;
    if (const size_t slash = entry.find('/'); slash != std::string::npos) {
      address = entry.substr(0, slash);
      if (!absl::SimpleAtoi(entry.substr(slash + 1), &prefix) || prefix < 0) {
        return bad();
      }
    }
    if (address.size() >= 2 && address.front() == '[' &&
        address.back() == ']') {
      address = address.substr(1, address.size() - 2);
    }
    Network n;
    if (inet_pton(AF_INET, address.c_str(), n.bytes.data()) == 1) {
      n.family = AF_INET;
      n.prefix = prefix < 0 ? 32 : prefix;
      if (n.prefix > 32) return bad();
    } else if (inet_pton(AF_INET6, address.c_str(), n.bytes.data()) == 1) {
      n.family = AF_INET6;
      n.prefix = prefix < 0 ? 128 : prefix;
      if (n.prefix > 128) return bad();
    } else {
      if (prefix >= 0) return bad();
      for (char c : entry) {
        if (!absl::ascii_isalnum(c) && c != '-' && c != '.' && c != '_') {
          return bad();
        }
      }
      p.hosts_.push_back(absl::AsciiStrToLower(entry));
      continue;
    }
    p.networks_.push_back(n);
  }
  return p;
}

std::string AddressPolicy::Refusal(const sockaddr* addr, socklen_t len,
                                   std::string_view host) const {
  // The address as family + bytes, and the IPv4 address it stands for.
  int family = 0;
  std::array<uint8_t, 16> bytes{};
  const char* refusal = "an address of an unknown family";
  bool has_v4 = false;
  uint32_t v4 = 0;
  if (addr->sa_family == AF_INET && len >= sizeof(sockaddr_in)) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(addr);
    family = AF_INET;
    std::memcpy(bytes.data(), &in->sin_addr, 4);
    has_v4 = true;
    v4 = ntohl(in->sin_addr.s_addr);
    refusal = Ipv4Refusal(v4);
  } else if (addr->sa_family == AF_INET6 && len >= sizeof(sockaddr_in6)) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(addr);
    family = AF_INET6;
    std::memcpy(bytes.data(), &in6->sin6_addr, 16);
    has_v4 = EmbeddedIpv4(in6->sin6_addr, &v4);
    refusal = Ipv6Refusal(in6->sin6_addr);
  }
  if (refusal == nullptr) return "";
  if (!host.empty()) {
    std::string h(host);
    absl::AsciiStrToLower(&h);
    if (h.size() >= 2 && h.front() == '[' && h.back() == ']') {
      h = h.substr(1, h.size() - 2);
    }
    for (const std::string& allowed : hosts_) {
      if (h == allowed) return "";
    }
  }
  uint8_t v4_bytes[4];
  const uint32_t v4_net = htonl(v4);
  std::memcpy(v4_bytes, &v4_net, 4);
  for (const Network& n : networks_) {
    if (n.family == family && family != 0 &&
        InPrefix(bytes.data(), n.bytes.data(), n.prefix)) {
      return "";
    }
    if (n.family == AF_INET && has_v4 &&
        InPrefix(v4_bytes, n.bytes.data(), n.prefix)) {
      return "";
    }
  }
  return refusal;
}

}  // namespace jobd
