// The README's screenshot of Compare formats: loads the page of a running `overdrive serve` in
// Debian's headless Chromium with a view and formats in its URL, waits for every panel, and saves
// a screenshot. Not part of ctest (formats_test.mjs is the test).
// Usage: node formats_screenshot.mjs http://127.0.0.1:PORT/ SCREENSHOT.{png,jpg} [QUERY]
import { chromium } from "playwright-core";

const [url, shot, query] = process.argv.slice(2);
const q = query || "mode=formats&z=47&center=-0.743643887037151,0.131825904205330&n=2&iter=2500" +
  "&formats=posit32,f64,fixed:4.60,dd";
let browser;
try {
  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
  const page = await browser.newPage({ viewport: { width: 1400, height: 620 } });
  page.on("pageerror", (e) => { console.error("page error: " + e.message); process.exitCode = 1; });
  await page.goto(url + "?" + q);
  await page.waitForFunction(() => window.overdrive.cmp.loads >= 1 && !window.overdrive.cmp.busy, null, { timeout: 300000 });
  const status = await page.textContent("#cmp-status");
  if (status !== "done") { console.error("compare load: " + status); process.exitCode = 1; }
  await page.screenshot({ path: shot, ...(/\.jpe?g$/.test(shot) ? { quality: 80 } : {}) });
} finally {
  if (browser) await browser.close();
}
