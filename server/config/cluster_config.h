// Cluster mode's settings (server/cluster): the --cluster, --node-name and
// cluster-* flags and config keys, and their checks once parsed, each
// error naming its option. Apart from config.cc to keep that file to its
// size.
//
// Thread-safety: used by ParseConfig only, on one thread.
#ifndef JOBD_SERVER_CONFIG_CLUSTER_CONFIG_H_
#define JOBD_SERVER_CONFIG_CLUSTER_CONFIG_H_

#include <string>

#include "absl/status/status.h"
#include "server/cluster/cluster_options.h"

namespace CLI {
class App;
}  // namespace CLI

namespace jobd {

// The flags' text before they are checked.
struct ClusterFlags {
  std::string heartbeat = "1s", node_ttl = "5s", reaper_period = "1s";
  std::string results_ttl = "24h";
};

// Adds the cluster flags, filling `options` and `flags`.
void AddClusterFlags(CLI::App& app, cluster::ClusterOptions& options,
                     ClusterFlags& flags);

// After parsing: the URL, the node name (the host's name when not given,
// checked either way), the durations and their relations. InvalidArgument
// naming the option. Without --cluster the other options are checked too
// (a config file is right or wrong whatever its --cluster).
absl::Status FinishClusterConfig(const ClusterFlags& flags,
                                 cluster::ClusterOptions& options);

}  // namespace jobd

#endif  // JOBD_SERVER_CONFIG_CLUSTER_CONFIG_H_
