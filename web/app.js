// Demo agent phone on top of gateway-client.js: register a DN, place and take calls,
// meter both directions of audio. No framework; element ids are part of the test contract.
import { GatewayClient } from './gateway-client.js';

const $ = (sel, root = document) => root.querySelector(sel);
const el = {
  serverUrl: $('#server-url'), dn: $('#dn'), password: $('#password'),
  accountForm: $('#account-form'), accountFields: $('#account-fields'),
  registerBtn: $('#register-btn'), regState: $('#reg-state'), who: $('#who'), conn: $('#conn-state'),
  dialForm: $('#dial-form'), dialInput: $('#dial-input'), dialClear: $('#dial-clear'), callBtn: $('#call-btn'),
  banner: $('#incoming-banner'), bannerFrom: $('#incoming-from'), bannerUri: $('#incoming-uri'),
  answerBtn: $('#answer-btn'), rejectBtn: $('#reject-btn'),
  calls: $('#calls'), callsEmpty: $('#calls-empty'), callsCount: $('#calls-count'),
  micLevel: $('#mic-level'), remoteLevel: $('#remote-level'),
  log: $('#event-log'), logClear: $('#log-clear'), audioBox: $('#remote-audio'),
  template: $('#call-template'),
};

el.serverUrl.value = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/';

let client = null;
/** callId -> call object of the client (pc, remoteStream, localStream, state, ...). */
const calls = new Map();
/** callId -> {li, audio, remote: AnalyserNode, mic: AnalyserNode, nodes: AudioNode[]} */
const views = new Map();
let audioCtx = null;
let ringingId = null;
let regState = 'unregistered';

// ---------- audio ----------

function audio() {
  if (!audioCtx) audioCtx = new AudioContext();
  if (audioCtx.state === 'suspended') audioCtx.resume().catch(() => {});
  return audioCtx;
}

function analyser(stream, fftSize, playOut) {
  const ctx = audio();
  const src = ctx.createMediaStreamSource(stream);
  const node = ctx.createAnalyser();
  node.fftSize = fftSize;
  node.smoothingTimeConstant = 0;
  src.connect(node);
  const nodes = [src, node];
  if (playOut) {
    // The <audio> element stays muted (it only makes Chromium deliver the samples); the
    // speaker output goes through WebAudio.
    const gain = ctx.createGain();
    src.connect(gain).connect(ctx.destination);
    nodes.push(gain);
  }
  return { node, nodes };
}

function rms(node) {
  if (!node) return 0;
  const buf = new Float32Array(node.fftSize);
  node.getFloatTimeDomainData(buf);
  let sum = 0;
  for (const v of buf) sum += v * v;
  return Math.sqrt(sum / buf.length);
}

/** RMS 0..1 -> meter position on a 60 dB scale. */
const meterValue = (level) => (level > 0 ? Math.max(0, Math.min(1, (20 * Math.log10(level) + 60) / 60)) : 0);

function currentView() {
  let last = null;
  for (const v of views.values()) if (v.remote) last = v;
  return last;
}

function remoteLevel() {
  return rms(currentView()?.remote);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Dominant frequency (Hz) of the most recent call's remote audio, averaged over `ms`. */
async function remoteFrequency(ms = 1000) {
  const view = currentView();
  if (!view) throw new Error('no remote audio');
  const node = view.remote;
  const bins = node.frequencyBinCount;
  const frame = new Float32Array(bins);
  const power = new Float64Array(bins);
  const end = performance.now() + ms;
  let frames = 0;
  do {
    node.getFloatFrequencyData(frame);
    for (let i = 0; i < bins; i++) if (Number.isFinite(frame[i])) power[i] += 10 ** (frame[i] / 10);
    frames++;
    await sleep(Math.min(50, ms));
  } while (performance.now() < end);
  const hz = node.context.sampleRate / node.fftSize;
  const lo = Math.ceil(100 / hz);
  const hi = Math.min(bins - 2, Math.floor(4000 / hz));
  let k = lo;
  for (let i = lo; i <= hi; i++) if (power[i] > power[k]) k = i;
  if (!(power[k] > 0)) return 0;
  const db = (i) => 10 * Math.log10(power[i] / frames + 1e-30);
  const [a, b, c] = [db(k - 1), db(k), db(k + 1)];
  const denom = a - 2 * b + c;
  const shift = denom < 0 ? (0.5 * (a - c)) / denom : 0;
  return (k + Math.max(-0.5, Math.min(0.5, shift))) * hz;
}

function meterLoop() {
  const view = currentView() || [...views.values()].pop();
  el.micLevel.value = meterValue(rms(view?.mic));
  el.remoteLevel.value = meterValue(rms(view?.remote));
  const now = Date.now();
  for (const [id, v] of views) {
    const call = calls.get(id);
    if (!call) continue;
    const since = call.answeredAt || call.startedAt;
    const s = Math.max(0, Math.floor((now - since) / 1000));
    const text = `${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
    const timer = $('.call-timer', v.li);
    if (timer.textContent !== text) timer.textContent = text;
  }
  requestAnimationFrame(meterLoop);
}
requestAnimationFrame(meterLoop);

// ---------- log ----------

function summary(detail) {
  if (detail == null) return '';
  if (detail instanceof Error) return `${detail.code ? detail.code + ': ' : ''}${detail.message}`;
  const parts = [];
  for (const [k, v] of Object.entries(detail)) {
    if (v === undefined || ['sdp', 'stream', 'track', 'resumeToken', 'password'].includes(k)) continue;
    parts.push(`${k}=${typeof v === 'object' ? JSON.stringify(v) : v}`);
  }
  return parts.join('  ');
}

function log(type, detail, level = 'info') {
  const li = document.createElement('li');
  li.dataset.level = level;
  const t = new Date();
  const time = document.createElement('time');
  time.dateTime = t.toISOString();
  time.textContent = t.toLocaleTimeString([], { hour12: false }) + '.' + String(t.getMilliseconds()).padStart(3, '0');
  const kind = document.createElement('span');
  kind.className = 'log-type';
  kind.textContent = type;
  const text = document.createElement('span');
  text.className = 'log-detail';
  text.textContent = typeof detail === 'string' ? detail : summary(detail);
  li.append(time, kind, text);
  el.log.prepend(li);
  while (el.log.childElementCount > 300) el.log.lastElementChild.remove();
}

// ---------- registration ----------

function setRegState(state) {
  regState = state;
  el.regState.textContent = state;
  el.regState.dataset.state = state === 'connecting…' ? 'connecting' : state;
  const registered = state === 'registered';
  el.registerBtn.textContent = registered ? 'Unregister' : 'Register';
  el.registerBtn.classList.toggle('btn-primary', !registered);
  el.registerBtn.classList.toggle('btn-secondary', registered);
  el.registerBtn.disabled = state === 'connecting…';
  el.accountFields.disabled = registered || state === 'connecting…';
  el.who.textContent = registered && client?.registration.dn ? `Extension ${client.registration.dn}` : '';
}

function setConnState(state) {
  el.conn.dataset.state = state;
  el.conn.textContent = { connected: 'Online', reconnecting: 'Reconnecting…', connecting: 'Connecting…' }[state] || 'Offline';
}

function newClient(url) {
  const c = new GatewayClient(url);
  const on = (type, fn) => c.addEventListener(type, (e) => { if (c === client) fn(e.detail); });
  for (const type of ['hello', 'ringing', 'earlyMedia', 'answered', 'held', 'resumed', 'outgoingCall']) {
    on(type, (d) => { log(type, d); if (d.callId) renderCall(d.callId); });
  }
  on('connection', (d) => {
    log('connection', d, d.state === 'connected' ? 'ok' : 'warn');
    setConnState(d.state);
    if (d.state === 'reconnecting') setRegState('connecting…');
    else if (d.state === 'connected' && d.resumed) setRegState(c.registration.state);
    else if (d.state === 'closed' && regState === 'connecting…') setRegState('unregistered');
  });
  on('registrationState', (d) => {
    log('registrationState', d, d.state === 'registered' ? 'ok' : d.state === 'failed' ? 'error' : 'info');
    setRegState(d.state);
  });
  // answeredFor lives in the call's `data`, which the client library keeps across a page reload.
  on('incomingCall', (d) => {
    log('incomingCall', d, 'ok');
    const call = c.calls.get(d.callId);
    if (call && c.autoAnswer && Number.isFinite(d.autoAnswer)) call.data.answeredFor = 'auto-answer';
    calls.set(d.callId, call);
    showBanner();
  });
  // The desktop or the SIP side answered for the agent: the client library answers by itself.
  on('answerRequested', (d) => {
    log('answerRequested', d, 'ok');
    const call = c.calls.get(d.callId);
    if (call) call.data.answeredFor = d.by === 'api' ? 'desktop' : 'remote';
  });
  // After a reload: the calls the gateway kept for this session, shown again; their audio follows.
  on('callRestored', (d) => {
    log('callRestored', { callId: d.callId, state: d.call.state }, 'ok');
    calls.set(d.callId, d.call);
    if (d.call.state === 'incoming') showBanner();
    else renderCall(d.callId);
  });
  on('callRecovery', (d) => {
    log('callRecovery', d, { recovered: 'ok', failed: 'error' }[d.state] || 'warn');
    renderCall(d.callId);
    if (d.state === 'restarting') note(d.callId, 'Reconnecting media…', false, true);
    else if (d.state === 'recovered') note(d.callId, 'Media reconnected');
    else note(d.callId, `Media not reconnected: ${d.message || d.code}`, true);
  });
  on('callUpdated', (d) => { log('callUpdated', d); renderCall(d.callId); });
  on('track', (d) => { log('track', { callId: d.callId, kind: d.track.kind }); attachRemote(d.callId, d.stream); });
  on('hangup', (d) => { log('hangup', d, 'warn'); removeCall(d.callId); });
  on('dtmf', (d) => log('dtmf', d));
  on('transferState', (d) => {
    log('transferState', d, d.state === 'failed' ? 'error' : 'info');
    note(d.callId, `Transfer ${d.state}${d.sipStatus ? ` (${d.sipStatus})` : ''}`, d.state === 'failed');
  });
  on('error', (d) => log('error', d, 'error'));
  return c;
}

async function connected() {
  const url = el.serverUrl.value.trim();
  if (client && (client.url !== url || client.state === 'closed')) {
    const old = client;
    client = null;
    old.close();
    for (const id of [...views.keys()]) removeCall(id);
    calls.clear();
    showBanner();
  }
  if (!client) client = newClient(url);
  remember(url);
  setConnState(client.state === 'connected' ? 'connected' : 'connecting');
  await client.connect();
  return client;
}

async function toggleRegistration() {
  audio();
  if (regState === 'registered') {
    try {
      await client.unregister();
      setRegState('unregistered');
    } catch (e) {
      log('unregister', e, 'error');
    }
    return;
  }
  const dn = el.dn.value.trim();
  if (!dn) return el.dn.focus();
  setRegState('connecting…');
  try {
    const c = await connected();
    const res = await c.register(dn, el.password.value);
    log('register', res, 'ok');
    setRegState('registered');
  } catch (e) {
    log('register', e, 'error');
    setRegState(client?.state === 'connected' ? 'failed' : 'unregistered');
    if (client?.state !== 'connected') setConnState('closed');
  }
}

// ---------- calls ----------

const STATE_TEXT = { earlyMedia: 'early media', incoming: 'ringing' };

function peerName(call) {
  if (call.direction === 'outgoing') return call.to;
  return call.displayName || userOf(call.from);
}

function userOf(uri = '') {
  const m = /^(?:sips?:)?([^@;>]+)@/.exec(uri.replace(/^.*</, ''));
  return m ? m[1] : uri;
}

function renderCall(callId) {
  const call = client?.calls.get(callId);
  if (!call || call.state === 'ended') return;
  if (call.state === 'incoming') return; // shown in the banner until answered
  calls.set(callId, call);
  let view = views.get(callId);
  if (!view) {
    const li = el.template.content.firstElementChild.cloneNode(true);
    li.dataset.callId = callId;
    const uid = 'c' + callId.replace(/[^\w-]/g, '');
    for (const [cls, suffix] of [['dtmf', 'dtmf'], ['transfer', 'xfer']]) {
      const form = $(`.${cls}-form`, li);
      $('input', form).id = `${uid}-${suffix}`;
      $('label', form).htmlFor = `${uid}-${suffix}`;
    }
    $('.call-peer', li).textContent = peerName(call);
    $('.call-avatar', li).textContent = call.direction === 'outgoing' ? '↗' : '↙';
    $('.call-avatar', li).dataset.dir = call.direction;
    $('.call-dir', li).textContent = call.placedForAgent ? 'Placed for you'
      : call.direction === 'outgoing' ? 'Outgoing' : 'Incoming';
    wireCall(li, callId);
    el.calls.prepend(li);
    view = { li, audio: null, remote: null, mic: null, nodes: [] };
    views.set(callId, view);
    if (call.remoteStream.getAudioTracks().length) attachRemote(callId, call.remoteStream);
  }
  // The interaction id the agent desktop (WWE) knows the call by.
  const uuid = Object.entries(call.headers || {}).find(([k]) => k.toLowerCase() === 'x-genesys-calluuid')?.[1];
  const uuidEl = $('.call-uuid', view.li);
  uuidEl.hidden = !uuid;
  if (uuid && $('code', uuidEl).textContent !== uuid) $('code', uuidEl).textContent = uuid;
  if (call.data.answeredFor) $('.call-dir', view.li).textContent = `Answered for you (${call.data.answeredFor})`;
  const text = STATE_TEXT[call.state] || call.state;
  const stateEl = $('.call-state', view.li);
  if (stateEl.textContent !== text) stateEl.textContent = text;
  view.li.dataset.state = call.state;
  const hold = $('.hold-btn', view.li);
  hold.textContent = call.state === 'held' ? 'Resume' : 'Hold';
  hold.disabled = call.state !== 'answered' && call.state !== 'held';
  if (call.localStream && !view.mic && call.localStream.getAudioTracks().length) {
    const a = analyser(call.localStream, 2048, false);
    view.mic = a.node;
    view.nodes.push(...a.nodes);
  }
  updateEmpty();
}

function attachRemote(callId, stream) {
  const view = views.get(callId);
  if (!view) return; // rendered later; renderCall attaches then
  if (!view.audio) {
    // Chromium reads a remote WebRTC stream as silence in WebAudio unless an element plays it.
    const a = document.createElement('audio');
    a.autoplay = true;
    a.muted = true;
    a.dataset.callId = callId;
    a.srcObject = stream;
    el.audioBox.append(a);
    a.play().catch(() => {});
    view.audio = a;
  }
  if (!view.remote && stream.getAudioTracks().length) {
    const a = analyser(stream, 8192, true);
    view.remote = a.node;
    view.nodes.push(...a.nodes);
  }
}

function removeCall(callId) {
  calls.delete(callId);
  const view = views.get(callId);
  if (view) {
    views.delete(callId);
    for (const n of view.nodes) n.disconnect();
    if (view.audio) { view.audio.srcObject = null; view.audio.remove(); }
    const hadFocus = view.li.contains(document.activeElement);
    view.li.remove();
    if (hadFocus) el.dialInput.focus();
  }
  if (ringingId === callId) showBanner();
  updateEmpty();
}

function updateEmpty() {
  const n = views.size;
  el.callsEmpty.hidden = n > 0;
  el.callsCount.textContent = n ? `${n} active` : '';
}

/** A line under the call; gone after 6 s unless `sticky` (a state that lasts until the next note). */
function note(callId, text, isError = false, sticky = false) {
  const view = views.get(callId);
  if (!view) return;
  const n = $('.call-note', view.li);
  n.textContent = text;
  n.dataset.error = isError;
  clearTimeout(n._timer);
  if (!sticky) n._timer = setTimeout(() => { n.textContent = ''; }, 6000);
}

async function act(callId, what, fn) {
  try {
    await fn();
  } catch (e) {
    log(what, e, 'error');
    note(callId, `${what} failed: ${e.message}`, true);
  }
}

function wireCall(li, callId) {
  $('.hangup-btn', li).addEventListener('click', () => act(callId, 'hangup', () => client.hangup(callId)));
  $('.hold-btn', li).addEventListener('click', () => {
    const held = client.calls.get(callId)?.state === 'held';
    act(callId, held ? 'unhold' : 'hold', () => (held ? client.unhold(callId) : client.hold(callId)));
  });
  $('.dtmf-form', li).addEventListener('submit', (e) => {
    e.preventDefault();
    const input = $('.dtmf-input', li);
    const digits = input.value.trim().toUpperCase();
    act(callId, 'dtmf', async () => {
      await client.dtmf(callId, digits);
      note(callId, `Sent DTMF ${digits}`);
      input.value = '';
    });
  });
  $('.transfer-form', li).addEventListener('submit', (e) => {
    e.preventDefault();
    const input = $('.transfer-input', li);
    const to = input.value.trim();
    act(callId, 'transfer', async () => {
      await client.transfer(callId, to);
      note(callId, `Transferring to ${to}…`);
    });
  });
}

function showBanner() {
  const waiting = [...(client?.calls.values() || [])].filter((c) => c.state === 'incoming');
  const call = waiting.pop();
  ringingId = call ? call.callId : null;
  el.banner.hidden = !call;
  el.answerBtn.disabled = el.rejectBtn.disabled = false;
  if (!call) return;
  el.bannerFrom.textContent = peerName(call);
  el.bannerUri.textContent = [call.from, call.to && `to ${userOf(call.to)}`].filter(Boolean).join(' · ');
}

async function placeCall() {
  const to = el.dialInput.value.trim();
  if (!to) return el.dialInput.focus();
  audio();
  if (!client || client.state === 'closed') return log('call', 'register first', 'error');
  el.callBtn.disabled = true;
  el.callBtn.textContent = 'Calling…';
  try {
    const call = await client.call(to);
    renderCall(call.callId);
    el.dialInput.value = '';
  } catch (e) {
    log('call', e, 'error');
  } finally {
    el.callBtn.disabled = false;
    el.callBtn.textContent = 'Call';
  }
}

async function answerRinging() {
  const id = ringingId;
  if (!id) return;
  audio();
  el.answerBtn.disabled = el.rejectBtn.disabled = true;
  const pending = client.answer(id);
  renderCall(id);
  showBanner();
  try {
    await pending;
    renderCall(id);
  } catch (e) {
    log('answer', e, 'error');
    removeCall(id);
    showBanner();
  }
}

async function rejectRinging() {
  const id = ringingId;
  if (!id) return;
  el.answerBtn.disabled = el.rejectBtn.disabled = true;
  try {
    await client.reject(id);
  } catch (e) {
    log('reject', e, 'error');
    el.answerBtn.disabled = el.rejectBtn.disabled = false;
  }
}

// ---------- wiring ----------

el.accountForm.addEventListener('submit', (e) => { e.preventDefault(); toggleRegistration(); });
el.dialForm.addEventListener('submit', (e) => { e.preventDefault(); placeCall(); });
for (const key of document.querySelectorAll('.dial-key')) {
  key.addEventListener('click', () => {
    el.dialInput.value += key.dataset.key;
    el.dialInput.dispatchEvent(new Event('input'));
  });
}
el.dialClear.addEventListener('click', () => { el.dialInput.value = el.dialInput.value.slice(0, -1); el.dialInput.focus(); });
el.answerBtn.addEventListener('click', answerRinging);
el.rejectBtn.addEventListener('click', rejectRinging);
el.logClear.addEventListener('click', () => el.log.replaceChildren());
// Leaving the page keeps its calls and registration for the gateway's grace period: a reload takes
// them back (the client library keeps the session in sessionStorage); a closed tab's calls end then.
setRegState('unregistered');
updateEmpty();

// ---------- reload ----------

const URL_KEY = 'gateway-demo:url';

/** The gateway address the session belongs to, for the reload (the client's store is per address). */
function remember(url) {
  try { sessionStorage.setItem(URL_KEY, url); } catch { /* no reload then */ }
}

async function restore() {
  let url = null;
  try { url = sessionStorage.getItem(URL_KEY); } catch { /* nothing stored */ }
  const c = url && newClient(url);
  const stored = c?.storedSession;
  if (!stored) return log('ready', 'enter your extension and register');
  client = c;
  el.serverUrl.value = url;
  if (stored.dn) el.dn.value = stored.dn;
  log('reload', `resuming the session (${stored.callIds.length} call(s))`);
  setRegState('connecting…');
  setConnState('connecting');
  try {
    const hello = await c.connect();
    if (!hello.resumed) log('reload', 'the session had ended: register again', 'warn');
    setRegState(c.registration.state);
  } catch (e) {
    log('reload', e, 'error');
    setRegState('unregistered');
    setConnState('closed');
  }
  // Without a click since the reload the browser may keep audio suspended; the first one resumes it.
  if (audio().state === 'suspended') {
    log('audio', 'click anywhere to hear the call', 'warn');
    addEventListener('pointerdown', () => audio(), { once: true });
  }
}
restore();

window.gatewayDemo = {
  get client() { return client; },
  calls,
  remoteFrequency,
  remoteLevel,
};
