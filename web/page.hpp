// The single-page UI, embedded in the binary at build time from web/page/index.html.
#pragma once

#include <string_view>

namespace overdrive {

/// The page served at GET /.
std::string_view page_html() noexcept;

} // namespace overdrive
