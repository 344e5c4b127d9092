// The dashboard's page: the files of server/dashboard/web/ compiled into
// jobd at build time (embed_assets.cmake writes dashboard_assets.cc), so
// that nothing is read from disk or fetched at run time.
//
// Thread-safety: constant data.
#ifndef JOBD_SERVER_DASHBOARD_ASSETS_H_
#define JOBD_SERVER_DASHBOARD_ASSETS_H_

#include <span>
#include <string_view>

namespace jobd {

struct DashboardAsset {
  std::string_view path;          // "/" for index.html, else "/<file>".
  std::string_view content_type;  // From the file's extension.
  std::string_view body;
};

std::span<const DashboardAsset> DashboardAssets();

}  // namespace jobd

#endif  // JOBD_SERVER_DASHBOARD_ASSETS_H_
