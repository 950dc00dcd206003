// Starts `overdrive serve` on an ephemeral loopback port for a browser test and stops it: SIGTERM,
// then a bounded wait for its graceful exit, failing unless it exits 0 (under asan/tsan a sanitizer
// report makes it exit non-zero; the tail of its stderr is printed). The server inherits this
// process's environment (ctest sets TSAN_OPTIONS/ASAN_OPTIONS/UBSAN_OPTIONS).
// startServer("http://host:port/") uses a running server instead (nothing is started or stopped).
import { spawn } from "node:child_process";

/// Returns { url: Promise<"http://127.0.0.1:PORT/">, kill(), stop(): Promise }.
export async function startServer(binOrUrl, fail, args = ["--workers", "2"]) {
  if (/^https?:\/\//.test(binOrUrl)) {
    const url = binOrUrl.endsWith("/") ? binOrUrl : binOrUrl + "/";
    return { url: Promise.resolve(url), kill() {}, async stop() {} };
  }
  const server = spawn(binOrUrl, ["serve", "--port", "0", "--quiet", ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let serverErr = "";
  server.stderr.on("data", (d) => { serverErr = (serverErr + d).slice(-64 * 1024); });
  const exit = new Promise((resolve) => {
    server.on("exit", (code, signal) => resolve({ code, signal }));
    server.on("error", (e) => resolve({ code: null, signal: null, error: e.message }));
  });
  let exited = false;
  exit.then(() => { exited = true; });
  const printErr = () => {
    const tail = serverErr.split("\n").slice(-60).join("\n").trim();
    console.error(tail ? "server stderr (tail):\n" + tail : "server stderr: (empty)");
  };
  let urlTimer;
  const url = new Promise((resolve, reject) => {
    let out = "";
    server.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/http:\/\/127\.0\.0\.1:\d+\//);
      if (m) resolve(m[0]);
    });
    exit.then((st) => reject(new Error("server exited early: " + JSON.stringify(st))));
    urlTimer = setTimeout(() => reject(new Error("server did not print its URL")), 20000);
  }).finally(() => clearTimeout(urlTimer));
  url.catch(() => {});
  return {
    url,
    kill() { server.kill("SIGKILL"); printErr(); },
    async stop() {
      if (!exited) server.kill("SIGTERM");
      let timer;
      const bound = new Promise((resolve) => { timer = setTimeout(() => resolve(null), 30000); });
      const st = await Promise.race([exit, bound]);
      clearTimeout(timer);
      if (st === null) {
        server.kill("SIGKILL");
        await exit;
        fail("server did not exit within 30 s of SIGTERM (killed)");
      } else if (st.error) {
        fail("could not start the server: " + st.error);
      } else if (st.code !== 0) {
        fail(`server exited with ${st.signal ? "signal " + st.signal : "code " + st.code}, expected 0 ` +
             "(a sanitizer report: 66 tsan, 1 asan/ubsan, 23 leaks)");
      }
      if (process.exitCode) printErr();
    },
  };
}
