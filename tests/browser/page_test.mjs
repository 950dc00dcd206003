// Browser test: starts `overdrive serve` on an ephemeral loopback port, loads the page in Debian's
// headless Chromium, waits for every tile, and checks that the tiles decoded and that the
// waterfall and worker lanes were drawn. Saves a screenshot.
// Usage: node page_test.mjs OVERDRIVE_BIN SCREENSHOT.png
import { spawn } from "node:child_process";
import { chromium } from "playwright-core";

const [bin, shot] = process.argv.slice(2);
const fail = (msg) => { console.error("FAIL: " + msg); process.exitCode = 1; };
const deadline = setTimeout(() => { console.error("FAIL: test exceeded 150 s"); process.exit(1); }, 150000);

const server = spawn(bin, ["serve", "--port", "0", "--workers", "2", "--quiet"], { stdio: ["ignore", "pipe", "inherit"] });
const url = await new Promise((resolve, reject) => {
  let out = "";
  server.stdout.on("data", (d) => {
    out += d;
    const m = out.match(/http:\/\/127\.0\.0\.1:\d+\//);
    if (m) resolve(m[0]);
  });
  server.on("exit", (code) => reject(new Error("server exited " + code)));
  setTimeout(() => reject(new Error("server did not print its URL")), 20000);
});

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"],
});
try {
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
} finally {
  await browser.close();
  server.kill("SIGTERM");
  clearTimeout(deadline);
}
console.log(process.exitCode ? "browser test failed" : "browser test passed");
