// `overdrive pyramid` as users run it: the real binary, alone and under `mpirun -n 2`, its files
// against `overdrive serve`'s bytes, an interrupted run resumed, bad flags, and the two ways of
// serving a pyramid (`serve --pyramid`, nginx with web/deploy/nginx-pyramid.conf).
#include "common/cluster.hpp"
#include "common/run_binary.hpp"
#include "common/stb_decode.hpp"

#include <filesystem>
#include <map>
#include <sstream>

namespace fs = std::filesystem;
using namespace overdrive::test;

namespace {

// Small tiles, few iterations: the same code path as the defaults, in a fraction of the time.
const std::string kTileFlags = "--size 64 --iter 128";
const std::string kTileArgs = "size=64&iter=128"; // the same as a query string

/// Every file under dir except pyramid.json (which holds timings): relative path -> bytes.
std::map<std::string, std::string> tree(const std::string &dir) {
  std::map<std::string, std::string> out;
  for (const auto &e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file() && e.path().filename() != "pyramid.json")
      out[fs::relative(e.path(), dir).string()] = read_text(e.path().string());
  return out;
}

/// mpirun, or a failure naming the package (never a skip). As root Open MPI needs two variables.
std::string require_mpirun() {
  const std::string mpirun = find_program("mpirun");
  INFO("mpirun is not installed: apt-get install openmpi-bin (scripts/test installs it)");
  REQUIRE(!mpirun.empty());
  if (::geteuid() == 0) {
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
  }
  return mpirun;
}

/// Open MPI's own allocations (its MCA components, freed or not at MPI_Finalize) are not
/// LeakSanitizer-clean, so ranks run without leak detection; ASan's other checks stay on. The ranks
/// inherit mpirun's environment.
constexpr const char *kRankAsanOptions = "ASAN_OPTIONS=detect_leaks=0";

std::string mpirun_pyramid(const std::string &mpirun, int ranks, const std::string &args) {
  return "env " + std::string(kRankAsanOptions) + " " + shell_quote(mpirun) + " -n " +
         std::to_string(ranks) + " --oversubscribe " + shell_quote(OVERDRIVE_BIN_PATH) +
         " pyramid " + args;
}

std::string get_body(const httplib::Client &c_in, const std::string &path,
                     std::string *cache_header = nullptr) {
  auto &c = const_cast<httplib::Client &>(c_in);
  const auto res = c.Get(path.c_str());
  INFO("GET " << path);
  REQUIRE(res);
  REQUIRE(res->status == 200);
  if (cache_header) *cache_header = res->get_header_value("X-Overdrive-Cache");
  return res->body;
}

const char *kSample[] = {"0/0/0", "1/0/1", "2/1/2", "3/2/5", "4/5/7", "4/15/0", "4/9/9"};

/// The same tile: the same bytes, or (see below) two PNGs that decode to the same pixels.
/// KNOWN RENDER BUG, not the pyramid's: render/png.cpp reuses igzip's level buffer per thread,
/// and about one tile in 5,000-20,000 gets a deflate stream (not pixels) that depends on what the
/// thread encoded before, so the same tile's bytes differ now and then between processes (and
/// between two `overdrive serve`s). Until that is fixed the tests accept equal pixels; set
/// kStrictBytes to true then.
constexpr bool kStrictBytes = false;
bool same_tile(const std::string &a, const std::string &b) {
  if (a == b) return true;
  if (kStrictBytes) return false;
  const auto da = decode_png(std::vector<std::uint8_t>(a.begin(), a.end()));
  const auto db = decode_png(std::vector<std::uint8_t>(b.begin(), b.end()));
  return da.width > 0 && da.width == db.width && da.height == db.height && da.pixels == db.pixels;
}

/// Two trees hold the same paths, and the same tiles under them.
bool same_tree(const std::map<std::string, std::string> &a,
               const std::map<std::string, std::string> &b) {
  if (a.size() != b.size()) return false;
  for (const auto &[k, v] : a)
    if (!b.count(k) || !same_tile(v, b.at(k))) return false;
  return true;
}

/// The paths where two trees differ (missing, extra or other bytes), at most 5: for messages.
std::string tree_diff(const std::map<std::string, std::string> &a,
                      const std::map<std::string, std::string> &b) {
  std::string out;
  int n = 0;
  for (const auto &[k, v] : a)
    if (n < 5 && (!b.count(k) || !same_tile(b.at(k), v))) out += (n++ ? ", " : "") + k;
  for (const auto &[k, v] : b)
    if (n < 5 && !a.count(k)) out += (n++ ? ", " : "") + k + " (extra)";
  return out;
}

} // namespace

TEST_CASE("Pyramid.TwoRanksEqualOneProcessAndTheServer" * doctest::timeout(300)) {
  const std::string mpirun = require_mpirun();
  TempDir tmp;
  const std::string one = tmp.path() + "/one", dyn = tmp.path() + "/dyn",
                    sta = tmp.path() + "/static";
  const std::string args = "--zoom 0-4 --workers 1 " + kTileFlags;
  const Run r1 = run_overdrive("pyramid " + args + " --out " + one);
  INFO(r1.output);
  REQUIRE(r1.status == 0);
  CHECK(r1.output.find("341 tiles (341 rendered, 0 skipped)") != std::string::npos);
  const Run r2 = run_shell(mpirun_pyramid(mpirun, 2, args + " --out " + dyn), 120);
  INFO(r2.output);
  REQUIRE(r2.status == 0);
  CHECK(r2.output.find("2 ranks (dynamic)") != std::string::npos);
  const Run r3 =
      run_shell(mpirun_pyramid(mpirun, 2, args + " --schedule static --out " + sta), 120);
  INFO(r3.output);
  REQUIRE(r3.status == 0);

  const auto a = tree(one);
  CHECK(a.size() == 341);
  CHECK(same_tree(tree(dyn), a));
  CHECK(same_tree(tree(sta), a));

  ReplicaProcess serve(tmp.path(), "live", 1, {});
  const auto client = serve.client();
  for (const char *t : kSample) {
    INFO("tile " << t);
    CHECK(same_tile(get_body(client, std::string("/tile/") + t + ".png?" + kTileArgs),
                    a.at(std::string(t) + ".png")));
  }
}

TEST_CASE("Pyramid.KilledRunResumesToTheSameResult" * doctest::timeout(300)) {
  const std::string mpirun = require_mpirun();
  TempDir tmp;
  const std::string ref = tmp.path() + "/ref", out = tmp.path() + "/out";
  const std::string args = "--zoom 0-6 --workers 1 " + kTileFlags;
  const Run full = run_overdrive("pyramid " + args + " --out " + ref);
  INFO(full.output);
  REQUIRE(full.status == 0);

  // Two ranks; once some tiles are written, rank 1 or 0 is killed (SIGKILL), as a crashed node
  // would be; mpirun then stops the job.
  {
    std::vector<std::string> argv = {"/usr/bin/env",
                                     kRankAsanOptions,
                                     mpirun,
                                     "-n",
                                     "2",
                                     "--oversubscribe",
                                     OVERDRIVE_BIN_PATH,
                                     "pyramid",
                                     "--zoom",
                                     "0-6",
                                     "--workers",
                                     "1",
                                     "--size",
                                     "64",
                                     "--iter",
                                     "128",
                                     "--out",
                                     out};
    ChildProcess run(argv, tmp.path() + "/run.out", tmp.path() + "/run.err");
    auto pngs = [&out] {
      std::size_t n = 0;
      std::error_code ec;
      for (auto it = fs::recursive_directory_iterator(out, ec);
           !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
        n += it->path().extension() == ".png";
      return n;
    };
    auto ranks = [&run] { // the ranks are mpirun's children
      std::vector<pid_t> pids;
      std::istringstream in(read_text("/proc/" + std::to_string(run.pid()) + "/task/" +
                                      std::to_string(run.pid()) + "/children"));
      for (pid_t p; in >> p;)
        pids.push_back(p);
      return pids;
    };
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(100);
    while (std::chrono::steady_clock::now() < until && run.running() && pngs() < 300)
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    INFO(read_text(tmp.path() + "/run.err"));
    REQUIRE(run.running()); // killed mid-way, or the test would test nothing
    const std::vector<pid_t> pids = ranks();
    REQUIRE(pids.size() == 2);
    ::kill(pids[1], SIGKILL);
    CHECK(run.wait_exit(std::chrono::seconds(60)) != 0);
    for (pid_t p : pids) // whatever mpirun left behind (nothing, normally)
      ::kill(p, SIGKILL);
  } // ChildProcess kills and reaps whatever is left of mpirun's group
  const auto partial = tree(out);
  const auto want = tree(ref);
  REQUIRE(partial.size() < want.size());
  for (const auto &[path, bytes] : partial) {
    if (fs::path(path).extension() != ".png") continue; // a .part the kill cut short
    INFO(path);
    CHECK(same_tile(bytes, want.at(path))); // every tile in place is complete
  }

  const Run resumed = run_overdrive("pyramid " + args + " --out " + out);
  INFO(resumed.output);
  REQUIRE(resumed.status == 0);
  CHECK(resumed.output.find(" 0 skipped") == std::string::npos);
  const auto after = tree(out);
  INFO("differ: " << tree_diff(after, want));
  CHECK(same_tree(after, want)); // no .part left over, every tile equal
}

TEST_CASE("Pyramid.BadFlagsAreRejectedWithoutWriting" * doctest::timeout(120)) {
  TempDir tmp;
  const std::string out = tmp.path() + "/out";
  const char *bad[] = {"--zoom 5-2",
                       "--zoom 0-41",
                       "--zoom x",
                       "--zoom 0-2 --bbox 3,3,4,4",
                       "--zoom 0-2 --bbox 0,0,0,1",
                       "--zoom 0-2 --bbox 1,2,3",
                       "--zoom 0-2 --iter 0",
                       "--zoom 0-2 --size 8",
                       "--zoom 0-2 --palette nope",
                       "--zoom 0-2 --precision f16",
                       "--zoom 0-4 --max-tiles 340",
                       "--zoom 0-2 --executor nope",
                       "--zoom 0-2 --schedule sometimes"};
  for (const char *flags : bad) {
    const Run r = run_overdrive(std::string("pyramid ") + flags + " --out " + out);
    INFO(flags << ": " << r.output);
    CHECK(r.status != 0);
    CHECK_FALSE(r.sanitizer_report());
    CHECK(r.output.find("error") != std::string::npos);
    CHECK(std::count(r.output.begin(), r.output.end(), '\n') == 1);
    CHECK_FALSE(fs::exists(out));
  }
  // An unwritable DIR: below a regular file.
  write_text(tmp.path() + "/file", "x");
  const Run r = run_overdrive("pyramid --zoom 0-1 --out " + tmp.path() + "/file/sub");
  INFO(r.output);
  CHECK(r.status != 0);
  CHECK(std::count(r.output.begin(), r.output.end(), '\n') == 1);

  // Other parameters into an existing pyramid: refused, nothing changed; --force overwrites.
  REQUIRE(run_overdrive("pyramid --zoom 0-1 " + kTileFlags + " --out " + out).status == 0);
  const auto before = tree(out);
  const Run other =
      run_overdrive("pyramid --zoom 0-1 --size 64 --iter 128 --palette fire --out " + out);
  INFO(other.output);
  CHECK(other.status != 0);
  CHECK(other.output.find("other parameters") != std::string::npos);
  CHECK(tree(out) == before);
  CHECK(read_text(out + "/pyramid.json").find("r1:64:128:") != std::string::npos);
  const Run forced =
      run_overdrive("pyramid --zoom 0-1 --size 64 --iter 128 --palette fire --force --out " + out);
  INFO(forced.output);
  CHECK(forced.status == 0);
  CHECK(forced.output.find("5 rendered, 0 skipped") != std::string::npos);
  CHECK(tree(out) != before);
  // A non-empty directory that is no pyramid: refused without --force.
  fs::create_directories(tmp.path() + "/other");
  write_text(tmp.path() + "/other/keep.txt", "mine");
  const Run stranger = run_overdrive("pyramid --zoom 0-1 --out " + tmp.path() + "/other");
  CHECK(stranger.status != 0);
  CHECK(tree(tmp.path() + "/other").size() == 1);
}

TEST_CASE("Pyramid.ServeFallsBackForMissingTiles" * doctest::timeout(180)) {
  TempDir tmp;
  const std::string dir = tmp.path() + "/pyr";
  const Run r = run_overdrive("pyramid --zoom 0-2 --workers 1 " + kTileFlags + " --out " + dir);
  INFO(r.output);
  REQUIRE(r.status == 0);
  fs::remove(dir + "/2/1/2.png"); // a hole in the pyramid

  ReplicaProcess live(tmp.path(), "live", 1, {"--cache-mb", "0"});
  ReplicaProcess served(tmp.path(), "pyr", 1, {"--cache-mb", "0", "--pyramid", dir});
  const auto lc = live.client();
  const auto pc = served.client();
  struct Case {
    std::string path;
    std::string from;
  };
  const Case cases[] = {
      {"/tile/1/0/1.png?" + kTileArgs, "pyramid"},  // in the pyramid
      {"/tile/2/1/2.png?" + kTileArgs, "miss"},     // the hole: rendered
      {"/tile/4/3/3.png?" + kTileArgs, "miss"},     // deeper than the pyramid
      {"/tile/1/0/1.png?size=64&iter=129", "miss"}, // other parameters
      {"/tile/1/0/1.png", "miss"},                  // the defaults are other parameters too
  };
  for (const auto &c : cases) {
    INFO(c.path);
    std::string from;
    const std::string body = get_body(pc, c.path, &from);
    CHECK(from == c.from);
    CHECK(same_tile(body, get_body(lc, c.path)));
  }
  CHECK(get_body(pc, "/tile/1/0/1.png?" + kTileArgs) == read_text(dir + "/1/0/1.png"));
}

TEST_CASE("Pyramid.NginxServesThePyramidThenTheReplicas" * doctest::timeout(180)) {
  const std::string nginx = find_program("nginx");
  INFO("nginx is not installed: apt-get install nginx-light (scripts/test installs it)");
  REQUIRE(!nginx.empty());
  TempDir tmp;
  const std::string dir = tmp.path() + "/pyr";
  const Run r = run_overdrive("pyramid --zoom 0-2 --workers 1 " + kTileFlags + " --out " + dir);
  INFO(r.output);
  REQUIRE(r.status == 0);
  ReplicaProcess live(tmp.path(), "r1", 1, {});
  const int port = free_loopback_port();
  const std::string deploy = std::string(OVERDRIVE_SOURCE_DIR) + "/web/deploy/";
  const std::string cfg = tmp.path() + "/nginx-pyramid.conf";
  write_text(cfg, render_template(read_text(deploy + "nginx-pyramid.conf"),
                                  {{"@BIND@", "127.0.0.1:" + std::to_string(port)},
                                   {"@DIR@", tmp.path()},
                                   {"@PYRAMID@", dir},
                                   {"@PYRAMID_ARGS@", kTileArgs}},
                                  {{"r1", live.addr(), 1}}));
  ChildProcess proc({nginx, "-e", "stderr", "-p", tmp.path(), "-c", cfg}, tmp.path() + "/nginx.out",
                    tmp.path() + "/nginx.log");
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < until && proc.running() && !accepts_connections(port))
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  INFO("nginx: " << read_text(tmp.path() + "/nginx.log"));
  REQUIRE(accepts_connections(port));
  httplib::Client nc("127.0.0.1", port);
  nc.set_connection_timeout(5);
  nc.set_read_timeout(30);
  const auto lc = live.client();
  struct Case {
    std::string path;
    bool pyramid;
  };
  const Case cases[] = {
      {"/tile/0/0/0.png?" + kTileArgs, true},
      {"/tile/2/3/1.png?" + kTileArgs, true},
      {"/tile/3/3/1.png?" + kTileArgs, false},     // deeper: live
      {"/tile/2/3/1.png?size=64&iter=129", false}, // other parameters: live
  };
  for (const auto &c : cases) {
    INFO(c.path);
    std::string from;
    const std::string body = get_body(nc, c.path, &from);
    CHECK((from == "pyramid") == c.pyramid);
    CHECK(same_tile(body, get_body(lc, c.path)));
  }
  // No other file of DIR is reachable (pyramid.json is not a tile).
  const auto res = nc.Get("/tile/pyramid.json");
  REQUIRE(res);
  CHECK(res->status != 200);
}
