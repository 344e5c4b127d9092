// Unit tests of AddressPolicy (workers/address_policy.h): which socket
// addresses http.get may connect to, in every spelling an address can take
// once resolved, and the operator's allowlist of hosts and networks.
#include "workers/reactor/address_policy.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace jobd {
namespace {

using ::testing::HasSubstr;

// The refusal for connecting to `ip` (v4 or v6 text) for URL host `host`.
std::string RefusalOf(const AddressPolicy& p, const std::string& ip,
                      const std::string& host = "example.com") {
  sockaddr_in in{};
  sockaddr_in6 in6{};
  if (inet_pton(AF_INET, ip.c_str(), &in.sin_addr) == 1) {
    in.sin_family = AF_INET;
    in.sin_port = htons(80);
    return p.Refusal(reinterpret_cast<sockaddr*>(&in), sizeof(in), host);
  }
  EXPECT_EQ(inet_pton(AF_INET6, ip.c_str(), &in6.sin6_addr), 1) << ip;
  in6.sin6_family = AF_INET6;
  in6.sin6_port = htons(80);
  return p.Refusal(reinterpret_cast<sockaddr*>(&in6), sizeof(in6), host);
}

TEST(AddressPolicyTest, RefusesEveryAddressThatIsNotPublic) {
  const AddressPolicy p;
  const std::pair<const char*, const char*> refused[] = {
      {"127.0.0.1", "loopback"},
      {"127.255.0.9", "loopback"},
      {"::1", "loopback"},
      {"::ffff:127.0.0.1", "loopback"},  // IPv4-mapped.
      {"::127.0.0.1", "loopback"},       // IPv4-compatible.
      {"64:ff9b::7f00:1", "loopback"},   // NAT64.
      {"0.0.0.0", "unspecified"},
      {"0.1.2.3", "unspecified"},
      {"::", "unspecified"},
      {"169.254.169.254", "link-local"},
      {"fe80::1", "link-local"},
      {"febf::1", "link-local"},
      {"10.0.0.1", "private"},
      {"172.16.0.1", "private"},
      {"172.31.255.255", "private"},
      {"192.168.1.1", "private"},
      {"100.64.0.1", "private"},
      {"100.127.255.254", "private"},
      {"fc00::1", "private"},
      {"fd12:3456::1", "private"},
      {"fec0::1", "private"},
      {"::ffff:10.1.2.3", "private"},
      {"224.0.0.1", "multicast"},
      {"239.255.255.250", "multicast"},
      {"ff02::1", "multicast"},
      {"255.255.255.255", "broadcast"},
      {"240.0.0.1", "reserved"},
      {"192.0.0.8", "reserved"},
      {"198.18.0.1", "reserved"},
  };
  for (const auto& [ip, what] : refused) {
    EXPECT_THAT(RefusalOf(p, ip), HasSubstr(what)) << ip;
  }
  for (const char* ip :
       {"93.184.216.34", "8.8.8.8", "172.32.0.1", "100.128.0.1", "11.0.0.1",
        "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"}) {
    EXPECT_EQ(RefusalOf(p, ip), "") << ip;
  }
}

TEST(AddressPolicyTest, AllowsListedNetworksAndHosts) {
  absl::StatusOr<AddressPolicy> p = AddressPolicy::Parse(
      {"127.0.0.1", "10.0.0.0/8", "fd00::/8", "Intranet.Example", ""});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(RefusalOf(*p, "127.0.0.1"), "");
  EXPECT_EQ(RefusalOf(*p, "::ffff:127.0.0.1"), "");  // The same address.
  EXPECT_THAT(RefusalOf(*p, "127.0.0.2"), HasSubstr("loopback"));
  EXPECT_THAT(RefusalOf(*p, "::1"), HasSubstr("loopback"));
  EXPECT_EQ(RefusalOf(*p, "10.20.30.40"), "");
  EXPECT_EQ(RefusalOf(*p, "fd00::5"), "");
  EXPECT_THAT(RefusalOf(*p, "fc00::5"), HasSubstr("private"));
  // A listed host may reach whatever it resolves to; another may not.
  EXPECT_EQ(RefusalOf(*p, "192.168.0.7", "intranet.example"), "");
  EXPECT_THAT(RefusalOf(*p, "192.168.0.7", "other.example"),
              HasSubstr("private"));
}

TEST(AddressPolicyTest, RejectsEntriesThatAreNeitherHostsNorNetworks) {
  for (const char* bad : {"10.0.0.0/33", "::/129", "10.0.0.0/x", "host/8",
                          "a b", "http://x", "10.0.0.0/-1"}) {
    absl::StatusOr<AddressPolicy> p = AddressPolicy::Parse({bad});
    EXPECT_FALSE(p.ok()) << bad;
    EXPECT_THAT(p.status().message(), HasSubstr("--http-allow")) << bad;
  }
}

}  // namespace
}  // namespace jobd
