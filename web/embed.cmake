# Turns a text file into a C++ translation unit defining one function returning its bytes.
# Usage: cmake -DINPUT=file -DOUTPUT=file.cpp -DFUNCTION=name -P embed.cmake
file(READ "${INPUT}" hex HEX)
string(LENGTH "${hex}" len)
math(EXPR bytes "${len} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n" body "${body}")
file(WRITE "${OUTPUT}" "// Generated from ${INPUT} by web/embed.cmake; do not edit.
#include \"web/page.hpp\"
namespace overdrive {
namespace {
const unsigned char data[] = {
${body}0};
} // namespace
std::string_view ${FUNCTION}() noexcept { return {reinterpret_cast<const char *>(data), ${bytes}}; }
} // namespace overdrive
")
