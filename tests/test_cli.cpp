// The overdrive executable as a user runs it: exit codes, messages and output files.
#include "common/run_binary.hpp"
#include "common/stb_decode.hpp"

#include <cstdio>
#include <cstdlib>
#include <doctest/doctest.h>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <sys/wait.h>

using overdrive::test::Run;
using overdrive::test::run_overdrive;

namespace {

std::filesystem::path temp_png(const char *name) {
  return std::filesystem::temp_directory_path() /
         (std::string("overdrive_test_") + std::to_string(::getpid()) + "_" + name);
}

std::vector<std::uint8_t> read_file(const std::filesystem::path &p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

} // namespace

TEST_CASE("Cli.HelpIsComplete") {
  const Run top = run_overdrive("--help");
  CHECK(top.status == 0);
  CHECK(top.output.find("render") != std::string::npos);
  const Run r = run_overdrive("render --help");
  CHECK(r.status == 0);
  for (const char *flag : {"--center", "--width", "--tile", "--size", "--iter", "--palette",
                           "--out", "32768", "10000000"})
    CHECK_MESSAGE(r.output.find(flag) != std::string::npos, flag);
}

TEST_CASE("Cli.RenderWritesAValidPng") {
  const auto out = temp_png("ok.png");
  const Run r = run_overdrive("render --size 64x48 --iter 100 --out " + out.string());
  CHECK(r.status == 0);
  CHECK(r.output.find(out.string()) != std::string::npos);
  const auto d = overdrive::test::decode_png(read_file(out));
  CHECK(d.width == 64);
  CHECK(d.height == 48);
  std::filesystem::remove(out);
}

TEST_CASE("Cli.RenderTileDefaultsTo256") {
  const auto out = temp_png("tile.png");
  const Run r = run_overdrive("render --tile 2/1/1 --iter 64 --out " + out.string());
  CHECK(r.status == 0);
  const auto d = overdrive::test::decode_png(read_file(out));
  CHECK(d.width == 256);
  CHECK(d.height == 256);
  std::filesystem::remove(out);
}

TEST_CASE("Cli.BadFlagsFailWithOneClearLine") {
  const auto out = temp_png("bad.png").string();
  struct Case {
    std::string args;
    std::string says;
  };
  const Case cases[] = {
      {"render --size 0", "--size"},
      {"render --size 100000x10", "--size"},
      {"render --size 10xq", "--size"},
      {"render --iter -5", "--iter"},
      {"render --iter 0", "--iter"},
      {"render --iter 99999999999", "--iter"},
      {"render --center abc", "--center"},
      {"render --center 1,zz", "--center"},
      {"render --width -1", "--width"},
      {"render --tile 2/4/0", "--tile"},
      {"render --tile 2/0", "--tile"},
      {"render --tile 121/0/0", "--tile"},
      {"render --tile 70/1180591620717411303424/0", "--tile"},
      {"render --precision posit7", "posit8, posit16, posit32"},
      {"render --precision f64,masked:0.99", "masked:E.M (E 2..11, M 1..52)"},
      {"render --precision fixed:3.3", "fixed:I.F"},
      {"render --width 1e-5x", "--width"},
      {"render --tile 1/0/0 --center 0,0", "excludes"},
      {"render --palette plaid", "--palette"},
      {"render --executor gpu", "--executor"},
      {"render --workers 0", "--workers"},
      {"render --out /nonexistent-dir/x.png", "cannot write"},
      {"render --no-such-flag", "no-such-flag"},
      {"frobnicate", "frobnicate"},
  };
  for (const auto &c : cases) {
    CAPTURE(c.args);
    const Run r =
        run_overdrive(c.args + (c.args.find("--out") == std::string::npos ? " --out " + out : ""));
    CHECK(r.status != 0);
    CHECK_FALSE(r.sanitizer_report());
    CHECK(r.output.find(c.says) != std::string::npos);
    CHECK(r.output.find("Segmentation") == std::string::npos);
  }
  std::filesystem::remove(out);
}

TEST_CASE("Cli.EveryExecutorRendersTheSameBytes" * doctest::timeout(120)) {
  std::vector<std::uint8_t> first;
  for (const char *ex : {"inline", "pool", "tbb"}) {
    CAPTURE(ex);
    const auto out = temp_png((std::string("ex_") + ex + ".png").c_str());
    const Run r =
        run_overdrive(std::string("render --size 300x200 --iter 300 --workers 2 --executor ") + ex +
                      " --out " + out.string());
    CHECK(r.status == 0);
    const auto png = read_file(out);
    CHECK(!png.empty());
    if (first.empty()) first = png;
    CHECK(png == first);
    std::filesystem::remove(out);
  }
  const auto out = temp_png("split.png");
  CHECK(run_overdrive("render --size 300x200 --iter 300 --workers 2 --executor tbb --split --out " +
                      out.string())
            .status == 0);
  CHECK(read_file(out) == first);
  std::filesystem::remove(out);
}

TEST_CASE("Cli.StatsPrintsOneJsonLine") {
  const auto out = temp_png("stats.png");
  const Run r = run_overdrive(
      "render --size 64 --iter 100 --executor pool --workers 2 --stats --out " + out.string());
  CHECK(r.status == 0);
  const auto brace = r.output.find("{\"executor\":\"pool\"");
  REQUIRE(brace != std::string::npos);
  const std::string line = r.output.substr(brace, r.output.find('\n', brace) - brace);
  for (const char *field : {"\"workers\":2", "\"width\":64", "\"height\":64",
                            "\"iterations\":", "\"render_ms\":", "\"encode_ms\":"})
    CHECK_MESSAGE(line.find(field) != std::string::npos, field);
  CHECK(line.back() == '}');
  std::filesystem::remove(out);
}

TEST_CASE("Cli.SeveralPrecisionsWriteImagesDiffsAndFractions" * doctest::timeout(120)) {
  // 1e-18 wide around i with a 40-digit centre: f64 cannot tell the pixels apart, dd can.
  const auto out = temp_png("cmp.png");
  const std::string stem = out.string().substr(0, out.string().size() - 4);
  const Run r = run_overdrive("render --center 0.0000000000000000000000000000000000000000,1 "
                              "--width 0.000000000000000001 --size 32 --iter 1000 "
                              "--precision f64,dd,masked:4.20 --json --stats --out " +
                              out.string());
  REQUIRE(r.status == 0);
  for (const char *name : {"f64", "dd", "masked_4_20"}) {
    CAPTURE(name);
    for (const char *suffix : {"", "-diff"}) {
      const auto file = stem + "-" + name + suffix + ".png";
      const auto d = overdrive::test::decode_png(read_file(file));
      CHECK(d.width == 32);
      std::filesystem::remove(file);
    }
  }
  // One JSON object on stdout with each format's fraction against the reference (dd here).
  const auto at = r.output.find("{\"reference\":\"dd\",\"formats\":[");
  REQUIRE(at != std::string::npos);
  auto fraction = [&r, at](const std::string &name) {
    const auto f = r.output.find("{\"precision\":\"" + name + "\"", at);
    REQUIRE(f != std::string::npos);
    const auto k = r.output.find("\"disagreement\":", f);
    return std::stod(r.output.substr(k + 15));
  };
  CHECK(fraction("f64") > 0.5);
  CHECK(fraction("dd") == 0.0);
  CHECK(fraction("masked:4.20") > 0.5);
}
