// The software number formats behind render_rows (format_render.cpp): exact pixel centres, the
// dispatch into render/formats/, and the native kernels at depths where doubles do not suffice.
#pragma once

#include "render/render.hpp"

namespace overdrive::detail {
/// True when req cannot take render_rows' native double path: a software format, or f64/f32 at
/// a depth where the view's doubles are not its exact pixel centres.
bool use_format_path(const RenderRequest &req);
/// render_rows for requests with use_format_path(req): counts by render_counts, colours as
/// render_rows does.
RenderStats render_rows_format(const RenderRequest &req, int row_begin, int row_end,
                               std::span<std::uint8_t> out);
} // namespace overdrive::detail
