// A cluster on loopback for a test: `overdrive serve` replicas and a real balancer (HAProxy or
// nginx) as child processes, with the balancer's configuration generated from the templates in
// web/deploy/ by the same rules as scripts/cluster. Every process is killed (its whole process
// group, so nginx's worker too) when its holder is destroyed, also when a check failed.
#pragma once

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <functional>
#include <httplib.h>
#include <memory>
#include <netinet/in.h>
#include <sstream>
#include <string>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace overdrive::test {

/// Polls pred every 10 ms until it holds or the bound passes; returns whether it held.
inline bool poll_until(const std::function<bool()> &pred, std::chrono::milliseconds bound) {
  const auto until = std::chrono::steady_clock::now() + bound;
  while (std::chrono::steady_clock::now() < until) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

/// A child process in a process group of its own, stdout and stderr to files. Destroying it kills
/// the group (SIGKILL) and reaps the child.
class ChildProcess {
public:
  ChildProcess(const std::vector<std::string> &argv, const std::string &out_path,
               const std::string &err_path) {
    std::vector<std::string> args = argv;
    std::vector<char *> cargv;
    for (auto &a : args)
      cargv.push_back(a.data());
    cargv.push_back(nullptr);
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      ::setpgid(0, 0);
      const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (out < 0 || err < 0) ::_exit(126);
      ::dup2(out, 1);
      ::dup2(err, 2);
      ::close(out);
      ::close(err);
      // The test's own signal mask and dispositions must not leak into the child.
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      ::signal(SIGPIPE, SIG_DFL);
      ::execv(cargv[0], cargv.data());
      ::_exit(127);
    }
    ::setpgid(pid_, pid_); // also from the parent: no race with a signal sent right away
  }
  ChildProcess(const ChildProcess &) = delete;
  ChildProcess &operator=(const ChildProcess &) = delete;
  ~ChildProcess() {
    if (!reaped_) {
      ::kill(-pid_, SIGKILL);
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }

  pid_t pid() const { return pid_; }

  /// Sends sig to the process (not its group).
  void signal(int sig) const { REQUIRE(::kill(pid_, sig) == 0); }

  /// Whether the process is still running (reaps it if it exited).
  bool running() {
    if (reaped_) return false;
    int st = 0;
    if (::waitpid(pid_, &st, WNOHANG) == pid_) {
      reaped_ = true;
      status_ = st;
      // A group member may outlive its leader (nginx's worker): no stray process stays.
      ::kill(-pid_, SIGKILL);
      return false;
    }
    return true;
  }

  /// Waits up to bound for the exit; the exit code, -1 if still running or killed by a signal.
  int wait_exit(std::chrono::milliseconds bound) {
    const auto until = std::chrono::steady_clock::now() + bound;
    while (running() && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (running()) return -1;
    return WIFEXITED(status_) ? WEXITSTATUS(status_) : -1;
  }

private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  int status_ = 0;
};

/// A fresh directory under /tmp (mode 755: nginx's worker runs as nobody when the test is root),
/// removed with its contents when destroyed.
class TempDir {
public:
  TempDir() {
    std::string tmpl = "/tmp/overdrive-cluster-test.XXXXXX";
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path_ = tmpl;
    ::chmod(path_.c_str(), 0755);
  }
  TempDir(const TempDir &) = delete;
  TempDir &operator=(const TempDir &) = delete;
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string &path() const { return path_; }

private:
  std::string path_;
};

inline std::string read_text(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

inline void write_text(const std::string &path, const std::string &text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  REQUIRE(out.good());
}

/// The path of a program in /usr/sbin, /usr/bin or PATH, or "" when it is not installed.
inline std::string find_program(const std::string &name) {
  std::vector<std::string> dirs = {"/usr/sbin", "/usr/bin", "/sbin", "/bin"};
  if (const char *path = std::getenv("PATH")) {
    std::istringstream s(path);
    for (std::string d; std::getline(s, d, ':');)
      if (!d.empty()) dirs.push_back(d);
  }
  for (const auto &d : dirs) {
    const std::string p = d + "/" + name;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return "";
}

/// A port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
inline int free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) == 0);
  socklen_t len = sizeof a;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len) == 0);
  ::close(fd);
  return ntohs(a.sin_port);
}

/// Whether something accepts connections on 127.0.0.1:port.
inline bool accepts_connections(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

/// One replica as the templates see it.
struct ReplicaSpec {
  std::string id;   ///< @ID@
  std::string addr; ///< @ADDR@, host:port
  int workers = 1;  ///< @WORKERS@
};

/// The rules stated in the headers of web/deploy/haproxy.cfg and nginx.conf (scripts/cluster
/// applies the same with awk): lines starting with '#' are kept as they are; in the others each
/// global placeholder is replaced, and a line containing @ID@ or @ADDR@ is repeated per replica.
inline std::string render_template(const std::string &text,
                                   const std::vector<std::pair<std::string, std::string>> &vars,
                                   const std::vector<ReplicaSpec> &replicas) {
  auto replace_all = [](std::string s, const std::string &from, const std::string &to) {
    for (std::size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
      s.replace(at, from.size(), to);
    return s;
  };
  std::istringstream in(text);
  std::string out;
  for (std::string line; std::getline(in, line);) {
    const auto first = line.find_first_not_of(" \t");
    if (first != std::string::npos && line[first] == '#') {
      out += line + "\n";
      continue;
    }
    for (const auto &[k, v] : vars)
      line = replace_all(line, k, v);
    if (line.find("@ID@") == std::string::npos && line.find("@ADDR@") == std::string::npos) {
      out += line + "\n";
      continue;
    }
    for (const auto &r : replicas) {
      std::string l = replace_all(line, "@ID@", r.id);
      l = replace_all(l, "@ADDR@", r.addr);
      out += replace_all(l, "@WORKERS@", std::to_string(r.workers)) + "\n";
    }
  }
  return out;
}

/// `overdrive serve --replica-id ID` on 127.0.0.1:port (0: any free port; the one it bound is
/// read from its "serving on" line).
class ReplicaProcess {
public:
  ReplicaProcess(const std::string &dir, const std::string &id, int workers,
                 const std::vector<std::string> &flags, int port = 0)
      : id_(id) {
    std::vector<std::string> argv = {
        OVERDRIVE_BIN_PATH, "serve", "--port",    std::to_string(port),
        "--replica-id",     id,      "--workers", std::to_string(workers),
        "--quiet"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    const std::string out = dir + "/" + id + ".out";
    proc_ = std::make_unique<ChildProcess>(argv, out, dir + "/" + id + ".log");
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < until && proc_->running()) {
      const std::string text = read_text(out);
      const auto at = text.find("http://127.0.0.1:");
      if (at != std::string::npos && text.find('\n', at) != std::string::npos) {
        port_ = std::atoi(text.c_str() + at + 17);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    INFO("replica " << id << " output: " << read_text(out) << read_text(dir + "/" + id + ".log"));
    REQUIRE(port_ > 0);
  }

  const std::string &id() const { return id_; }
  int port() const { return port_; }
  std::string addr() const { return "127.0.0.1:" + std::to_string(port_); }
  ChildProcess &process() { return *proc_; }

  /// A client straight to this replica, bounded timeouts.
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port_);
    c.set_connection_timeout(5);
    c.set_read_timeout(30);
    return c;
  }

private:
  std::string id_;
  int port_ = 0;
  std::unique_ptr<ChildProcess> proc_;
};

/// The balancers scripts/cluster offers.
enum class Balancer { haproxy, nginx_rr, nginx_least, nginx_least_max, nginx_cache };

inline const char *to_string(Balancer b) {
  switch (b) {
  case Balancer::haproxy:
    return "haproxy";
  case Balancer::nginx_rr:
    return "nginx-rr";
  case Balancer::nginx_least:
    return "nginx-least";
  case Balancer::nginx_least_max:
    return "nginx-maxconns";
  case Balancer::nginx_cache:
    return "nginx-cache";
  }
  return "?";
}

/// R replicas x W workers behind a balancer, all on ephemeral loopback ports.
class Cluster {
public:
  Cluster(Balancer b, int replicas, int workers, const std::vector<std::string> &serve_flags)
      : balancer_(b), workers_(workers), flags_(serve_flags) {
    const bool haproxy = b == Balancer::haproxy;
    // Never a silent skip: a missing balancer is a failure that names the package.
    const std::string program = find_program(haproxy ? "haproxy" : "nginx");
    INFO((haproxy ? "haproxy" : "nginx")
         << " is not installed: apt-get install " << (haproxy ? "haproxy" : "nginx-light")
         << " (scripts/test installs it)");
    REQUIRE(!program.empty());
    for (int n = 1; n <= replicas; ++n) {
      std::string id = "r"; // (not "r" + to_string(n): GCC 12 warns -Wrestrict, falsely)
      id += std::to_string(n);
      replicas_.push_back(std::make_unique<ReplicaProcess>(dir_.path(), id, workers, flags_));
    }
    std::vector<ReplicaSpec> specs;
    for (const auto &r : replicas_)
      specs.push_back({r->id(), r->addr(), workers});
    port_ = free_loopback_port();
    const std::string deploy = std::string(OVERDRIVE_SOURCE_DIR) + "/web/deploy/";
    std::vector<std::pair<std::string, std::string>> vars = {
        {"@BIND@", "127.0.0.1:" + std::to_string(port_)}, {"@DIR@", dir_.path()}};
    std::vector<std::string> argv;
    if (haproxy) {
      write_text(dir_.path() + "/429.http", read_text(deploy + "429.http"));
      const std::string cfg = dir_.path() + "/haproxy.cfg";
      write_text(cfg, render_template(read_text(deploy + "haproxy.cfg"), vars, specs));
      argv = {program, "-db", "-f", cfg};
    } else {
      vars.emplace_back("@UPSTREAM@", b == Balancer::nginx_rr          ? "tiles_rr"
                                      : b == Balancer::nginx_least_max ? "tiles_least_max"
                                                                       : "tiles_least");
      vars.emplace_back("@CACHE@", b == Balancer::nginx_cache ? "tiles" : "off");
      const std::string cfg = dir_.path() + "/nginx.conf";
      write_text(cfg, render_template(read_text(deploy + "nginx.conf"), vars, specs));
      argv = {program, "-e", "stderr", "-p", dir_.path(), "-c", cfg};
    }
    const std::string log = dir_.path() + "/balancer.log";
    balancer_proc_ = std::make_unique<ChildProcess>(argv, dir_.path() + "/balancer.out", log);
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < until && balancer_proc_->running() &&
           !accepts_connections(port_))
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    INFO(to_string(b) << " did not start: " << read_text(log));
    REQUIRE(balancer_proc_->running());
    REQUIRE(accepts_connections(port_));
  }

  /// A client to the balancer, bounded timeouts.
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port_);
    c.set_connection_timeout(5);
    c.set_read_timeout(30);
    return c;
  }

  ReplicaProcess &replica(std::size_t i) { return *replicas_.at(i); }

  /// Starts replica i again, on the port it had (after it died or stopped).
  void restart(std::size_t i) {
    auto &old = replicas_.at(i);
    const std::string id = old->id();
    const int port = old->port();
    old.reset();
    replicas_.at(i) = std::make_unique<ReplicaProcess>(dir_.path(), id, workers_, flags_, port);
  }

  ChildProcess &balancer_process() { return *balancer_proc_; }
  std::string balancer_log() const { return read_text(dir_.path() + "/balancer.log"); }
  int port() const { return port_; }
  Balancer balancer() const { return balancer_; }

private:
  TempDir dir_; // destroyed last: the processes below are gone before their files
  Balancer balancer_;
  int workers_;
  std::vector<std::string> flags_;
  std::vector<std::unique_ptr<ReplicaProcess>> replicas_;
  std::unique_ptr<ChildProcess> balancer_proc_;
  int port_ = 0;
};

} // namespace overdrive::test
