// Browser test: starts `overdrive serve` on an ephemeral loopback port, loads the page in Debian's
// headless Chromium, waits for every tile, and checks that the tiles decoded and that the
// waterfall and worker lanes were drawn. Saves a screenshot. Then stops the server with SIGTERM
// and fails unless it exits 0: under asan/tsan a sanitizer report in the server makes it exit
// non-zero, and the tail of its stderr is printed. The server inherits this process's
// environment (ctest sets TSAN_OPTIONS/ASAN_OPTIONS/UBSAN_OPTIONS, see tests/CMakeLists.txt).
// Usage: node page_test.mjs OVERDRIVE_BIN SCREENSHOT.png
import { spawn } from "node:child_process";
import { chromium } from "playwright-core";

const [bin, shot] = process.argv.slice(2);
const fail = (msg) => { console.error("FAIL: " + msg); process.exitCode = 1; };

const server = spawn(bin, ["serve", "--port", "0", "--workers", "2", "--quiet"],
                     { stdio: ["ignore", "pipe", "pipe"] });
let serverErr = "";
server.stderr.on("data", (d) => { serverErr = (serverErr + d).slice(-64 * 1024); });
const serverExit = new Promise((resolve) => {
  server.on("exit", (code, signal) => resolve({ code, signal }));
  server.on("error", (e) => resolve({ code: null, signal: null, error: e.message }));
});
let serverExited = false;
serverExit.then(() => { serverExited = true; });
const printServerErr = () => {
  const tail = serverErr.split("\n").slice(-60).join("\n").trim();
  console.error(tail ? "server stderr (tail):\n" + tail : "server stderr: (empty)");
};

const deadline = setTimeout(() => {
  console.error("FAIL: test exceeded 150 s");
  server.kill("SIGKILL");
  printServerErr();
  process.exit(1);
}, 150000);

/// SIGTERM, then waits (bounded) for the server's graceful exit; fails unless it exits 0.
async function stopServer() {
  if (!serverExited) server.kill("SIGTERM");
  let timer;
  const bound = new Promise((resolve) => { timer = setTimeout(() => resolve(null), 30000); });
  let st = await Promise.race([serverExit, bound]);
  clearTimeout(timer);
  if (st === null) {
    server.kill("SIGKILL");
    await serverExit;
    fail("server did not exit within 30 s of SIGTERM (killed)");
  } else if (st.error) {
    fail("could not start the server: " + st.error);
  } else if (st.code !== 0) {
    fail(`server exited with ${st.signal ? "signal " + st.signal : "code " + st.code}, expected 0 ` +
         "(a sanitizer report: 66 tsan, 1 asan/ubsan, 23 leaks)");
  }
  if (process.exitCode) printServerErr();
}

let browser;
try {
  let urlTimer;
  const url = await new Promise((resolve, reject) => {
    let out = "";
    server.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/http:\/\/127\.0\.0\.1:\d+\//);
      if (m) resolve(m[0]);
    });
    serverExit.then((st) => reject(new Error("server exited early: " + JSON.stringify(st))));
    urlTimer = setTimeout(() => reject(new Error("server did not print its URL")), 20000);
  }).finally(() => clearTimeout(urlTimer));

  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
  const page = await browser.newPage({ viewport: { width: 1500, height: 1100 } });
  page.on("pageerror", (e) => fail("page error: " + e.message));
  await page.goto(url + "?autoload=0");
  await page.fill("#iter", "512");
  await page.click("#compare");
  // Three loads (inline, tbb, pool) of 16 tiles each.
  await page.waitForFunction(() => window.overdrive.loads.length === 3 && !window.overdrive.busy,
                             null, { timeout: 120000 });
  const loads = await page.evaluate(() => window.overdrive.loads.map((l) => ({
    executor: l.executor, tiles: l.tiles.length, decoded: l.decoded,
    timed: l.tiles.filter((t) => t.end !== undefined && t.hasServer).length,
    waterfallBars: l.waterfallBars, laneBars: l.laneBars, events: l.events.length,
  })));
  console.log(JSON.stringify(loads));
  for (const l of loads) {
    if (l.tiles !== 16) fail(`${l.executor}: ${l.tiles} tiles requested, expected 16`);
    if (l.decoded !== l.tiles) fail(`${l.executor}: only ${l.decoded}/${l.tiles} tiles decoded`);
    if (l.timed !== l.tiles) fail(`${l.executor}: Resource/Server-Timing for ${l.timed}/${l.tiles} tiles`);
    if (l.waterfallBars < l.tiles * 3) fail(`${l.executor}: waterfall drew ${l.waterfallBars} bars`);
    if (l.laneBars !== l.tiles) fail(`${l.executor}: worker lanes drew ${l.laneBars} bars for ${l.tiles} jobs`);
  }
  if (loads.map((l) => l.executor).join() !== "inline,tbb,pool") fail("compare order");
  const summaries = await page.locator(".summary").count();
  if (summaries !== 3) fail(`${summaries} summary lines`);
  const imgs = await page.evaluate(() => [...document.querySelectorAll("#grid img")].filter((i) => i.naturalWidth === 256).length);
  if (imgs !== 16) fail(`${imgs} grid images decoded at 256 px`);
  if (shot) await page.screenshot({ path: shot, fullPage: true });
} catch (e) {
  fail(e.stack || String(e));
} finally {
  if (browser) await browser.close().catch((e) => fail("closing the browser: " + e.message));
  await stopServer();
  clearTimeout(deadline);
}
console.log(process.exitCode ? "browser test failed" : "browser test passed");
