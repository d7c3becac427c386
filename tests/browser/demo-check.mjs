// The README's demo, as a newcomer does it, in Debian's Chromium: two tabs of one browser (no
// flags beyond a fake microphone: loopback candidates are skipped as in any Chrome) open the
// demo page, register 5001 and 5002, 5001 calls 5002, 5002 answers, and each tab must hear the
// other's microphone (a 440 Hz tone). Prints what it measured; exits 1 if audio does not flow.
//
//   node demo-check.mjs http://127.0.0.1:8081/ SCREENSHOT.png
import { chromium } from 'playwright-core';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const url = process.argv[2] ?? 'http://127.0.0.1:8081/';
const shot = process.argv[3];

// 20 s of a 440 Hz sine, mono 16-bit 48 kHz, for Chromium's fake capture device.
function toneWav(path, freq, seconds) {
  const rate = 48000;
  const n = rate * seconds;
  const buf = Buffer.alloc(44 + n * 2);
  buf.write('RIFF', 0); buf.writeUInt32LE(36 + n * 2, 4); buf.write('WAVEfmt ', 8);
  buf.writeUInt32LE(16, 16); buf.writeUInt16LE(1, 20); buf.writeUInt16LE(1, 22);
  buf.writeUInt32LE(rate, 24); buf.writeUInt32LE(rate * 2, 28); buf.writeUInt16LE(2, 32);
  buf.writeUInt16LE(16, 34); buf.write('data', 36); buf.writeUInt32LE(n * 2, 40);
  for (let i = 0; i < n; i++) buf.writeInt16LE(Math.round(Math.sin((2 * Math.PI * freq * i) / rate) * 12000), 44 + 2 * i);
  writeFileSync(path, buf);
}

const wav = join(mkdtempSync(join(tmpdir(), 'demo-check-')), 'tone.wav');
toneWav(wav, 440, 30);
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: [
    '--no-sandbox',
    '--use-fake-device-for-media-stream',
    '--use-fake-ui-for-media-stream',
    `--use-file-for-fake-audio-capture=${wav}`,
    '--autoplay-policy=no-user-gesture-required',
  ],
});
let failed = false;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const [a, b] = [await context.newPage(), await context.newPage()];
  for (const [page, dn] of [[a, '5001'], [b, '5002']]) {
    await page.goto(url);
    await page.fill('#dn', dn);
    await page.fill('#password', `pass${dn}`);
    await page.click('#register-btn');
    await page.waitForFunction(() => document.querySelector('#reg-state')?.textContent?.trim() === 'registered');
  }
  await a.fill('#dial-input', '5002');
  await a.click('#call-btn');
  await b.waitForSelector('#incoming-banner', { state: 'visible', timeout: 15000 });
  await b.click('#answer-btn');
  for (const page of [a, b]) {
    await page.waitForFunction(() => document.querySelector('#calls li .call-state')?.textContent?.trim() === 'answered', null, { timeout: 15000 });
  }
  await a.waitForTimeout(3000);
  for (const [page, dn] of [[a, '5001'], [b, '5002']]) {
    const seen = await page.evaluate(async () => {
      const call = [...window.gatewayDemo.client.calls.values()][0];
      let pair = 'none';
      for (const s of (await call.pc.getStats()).values()) {
        if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') {
          const stats = await call.pc.getStats();
          const l = stats.get(s.localCandidateId);
          const r = stats.get(s.remoteCandidateId);
          pair = `${l.address}:${l.port} -> ${r.address}:${r.port}`;
        }
      }
      return { hz: await window.gatewayDemo.remoteFrequency(1500), level: window.gatewayDemo.remoteLevel(), pair };
    });
    const ok = seen.hz >= 420 && seen.hz <= 460;
    failed ||= !ok;
    console.log(`${dn}: hears ${seen.hz.toFixed(0)} Hz (level ${seen.level.toFixed(3)}), ICE pair ${seen.pair} ${ok ? 'ok' : 'NO AUDIO'}`);
  }
  if (shot) {
    await a.screenshot({ path: shot, fullPage: true });
    console.log(`screenshot of 5001's tab: ${shot}`);
  }
  await a.click('#calls li .hangup-btn');
  await b.waitForSelector('#calls li', { state: 'detached', timeout: 15000 });
} catch (e) {
  console.log(`demo check failed: ${e.message}`);
  failed = true;
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
