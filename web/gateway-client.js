/**
 * Browser client for the SIP/WebRTC gateway, protocol v1 with the v1.1 additions (PROTOCOL.md).
 * No dependencies; types in gateway-client.d.ts.
 * Events (CustomEvent, `detail` = server payload): hello, registrationState, incomingCall, ringing,
 * earlyMedia, answered, held, resumed, dtmf, iceCandidate, transferState, hangup, error, and (v1.1)
 * answerRequested, callUpdated; and the client's own:
 * - track `{callId, stream, track}`: far-end audio arrived (again, after a re-attach)
 * - connection `{state: connected|reconnecting|closed, reason?, resumed?, restored?, calls?, dn?}`
 *   (`restored`: the session was taken back from `sessionStorage` after a page reload)
 * - outgoingCall `{callId, to}`: a `call()` got its callId
 * - callRestored `{callId, call}`: after a page reload, a call the gateway still holds is back in
 *   `calls` (its `state` as stored; `incoming` ones can be answered again); its media follows
 *   through `callRecovery` with reason `reload`
 * - callRecovery `{callId, state: restarting|recovered|failed, reason, code?, message?}`: the media
 *   path of a call is being rebuilt (ICE restart, or a fresh RTCPeerConnection after a reload);
 *   reason is `disconnected`, `failed` (the connection's state), `online` (the browser's network
 *   came back), `resume` (the socket was resumed), `reload` or `manual` (`renegotiate()`)
 * @module gateway-client
 */

/**
 * An `error` reply (`code` from PROTOCOL.md, `sipStatus` when SIP caused it) or a client-side
 * failure: `not_connected`, `disconnected` (socket lost mid-request), `closed`, `hangup` (call ended),
 * `media_failed` (a restart brought no media back).
 */
export class GatewayError extends Error {
  /** @param {string} code @param {string} [message] @param {number} [sipStatus] */
  constructor(code, message, sipStatus) {
    super(message || code);
    Object.assign(this, { name: 'GatewayError', code, sipStatus });
  }
}

/**
 * @typedef {object} Call  callId (null until the `call` result), direction (outgoing|incoming), state
 *   (calling|incoming|answering|ringing|earlyMedia|answered|held|ended), to, from, displayName, headers
 *   (the SIP side's `X-*` headers, e.g. `X-Genesys-CallUUID`), placedForAgent (an incoming call placed on the
 *   agent's behalf: 3pcc or click-to-dial), autoAnswer (seconds, when the call asks to be answered by itself),
 *   pc (RTCPeerConnection), remoteStream (far end), localStream (sent), startedAt, answeredAt (epoch ms),
 *   recovery (null, `restarting` or `failed`: see `callRecovery`), restored (came back after a page reload),
 *   data (the app's own JSON-serializable notes, kept with the call across a reload)
 */

/** Fields of a call kept in `sessionStorage`, enough to show it again after a reload. */
const KEPT = ['callId', 'direction', 'state', 'to', 'from', 'displayName', 'headers', 'placedForAgent',
  'autoAnswer', 'startedAt', 'answeredAt', 'data'];
/** How long a restart may take to bring the connection back before it counts as failed. */
const RECOVERY_TIMEOUT = 15000;
/** Restarts the connection's own state changes may start in a row without getting connected. */
const AUTO_TRIES = 3;

function gathered(pc, ms = 2000) {
  return new Promise((resolve) => {
    const check = () => { if (pc.iceGatheringState === 'complete') done(); };
    const done = () => { clearTimeout(t); pc.removeEventListener('icegatheringstatechange', check); resolve(); };
    const t = setTimeout(done, ms);
    pc.addEventListener('icegatheringstatechange', check);
    check();
  });
}

/** connectionState where the browser has it (it includes DTLS), else the ICE state. */
function link(pc) {
  const s = pc.connectionState;
  if (s) return s;
  const i = pc.iceConnectionState;
  return i === 'completed' ? 'connected' : i === 'checking' ? 'connecting' : i;
}

/**
 * Resolves true once `pc` is connected, false when it fails, times out or `rec.wake` is called
 * (another trigger arrived: the loop in `_recover` goes again).
 */
function linked(pc, ms, rec) {
  return new Promise((resolve) => {
    const done = (ok) => {
      clearTimeout(t);
      pc.removeEventListener('connectionstatechange', check);
      pc.removeEventListener('iceconnectionstatechange', check);
      rec.wake = null;
      resolve(ok);
    };
    const check = () => {
      const s = link(pc);
      if (s === 'connected') done(true);
      else if (s === 'failed' || s === 'closed') done(false);
    };
    const t = setTimeout(() => done(false), ms);
    rec.wake = () => done(false);
    pc.addEventListener('connectionstatechange', check);
    pc.addEventListener('iceconnectionstatechange', check);
    // A `failed` seen now may be the state the restart was started for, not yet left: only a change counts.
    if (link(pc) === 'connected') done(true);
  });
}

/** `sessionStorage`, or null where the page may not use it (sandboxed frames, disabled storage). */
function sessionStore() {
  try {
    const s = globalThis.sessionStorage;
    s?.getItem('');
    return s || null;
  } catch {
    return null;
  }
}

/** One gateway session; survives socket drops by resuming it, and page reloads by storing it. */
export class GatewayClient extends EventTarget {
  /**
   * @param {string} url  e.g. `ws://host:8081/`
   * @param {object} [o]
   * @param {boolean} [o.autoReconnect=true]  reconnect and `resume` after an unexpected close
   * @param {number[]} [o.reconnectDelays=[250,500,1000,2000,4000]]  ms before each attempt; the last repeats
   * @param {number} [o.keepAlive=20000]  ms between `ping`s; no reply within half of that drops the socket (0: off)
   * @param {boolean} [o.autoAnswer=true]  answer by itself when the server asks (`answerRequested`: the desktop
   *   or the SIP side answered for the agent) and when an `incomingCall` carries `autoAnswer`; false: only the events
   * @param {RTCConfiguration} [o.rtcConfig={}]  extras for every RTCPeerConnection (`iceTransportPolicy: 'relay'`,
   *   `bundlePolicy`, ...). Its `iceServers`, when given, replace the gateway's; without them the gateway's
   *   (`hello`, refreshed by each `resume`) are used
   * @param {boolean} [o.autoRecover=true]  restart ICE by itself when a call's connection goes `disconnected`
   *   (for `recoveryDelay`) or `failed`, on the browser's `online` event and after a resume
   * @param {number} [o.recoveryDelay=1000]  ms a connection may stay `disconnected` before a restart
   * @param {boolean} [o.persist=true]  keep the session and its calls in `sessionStorage`, so that `connect()`
   *   after a page reload resumes them (and re-attaches the calls' media)
   * @param {string} [o.storagePrefix='gateway-client:']  `sessionStorage` key prefix (the url follows it)
   */
  constructor(url, {
    autoReconnect = true, reconnectDelays = [250, 500, 1000, 2000, 4000], keepAlive = 20000, autoAnswer = true,
    rtcConfig = {}, autoRecover = true, recoveryDelay = 1000, persist = true, storagePrefix = 'gateway-client:',
  } = {}) {
    super();
    Object.assign(this, {
      url, autoReconnect, keepAlive, autoAnswer, rtcConfig: { ...rtcConfig }, autoRecover, recoveryDelay, persist,
      reconnectDelays: reconnectDelays.length ? reconnectDelays : [1000],
    });
    /** @type {'closed'|'connecting'|'connected'|'reconnecting'} */
    this.state = 'closed';
    /** Session id and token from `hello`; after a resume still the original ones. */
    this.sessionId = this.resumeToken = null;
    /** The gateway's ICE servers (`hello`, then each `resume`). @type {RTCIceServer[]} */
    this.iceServers = [];
    /** Last known registration `{dn, state}`. */
    this.registration = { dn: null, state: 'unregistered' };
    /** @type {Map<string, Call>} */
    this.calls = new Map();
    this._seq = this._attempt = 0;
    this._pending = new Map();
    this._waiting = [];
    this._onUp = [];
    this._key = storagePrefix + url;
    this._restore = this._load();
    if (this._restore) ({ sessionId: this.sessionId, resumeToken: this.resumeToken } = this._restore);
    this._online = () => this._networkBack();
    this._pagehide = () => this._save();
  }

  /**
   * What `sessionStorage` holds for this url from before a reload (`connect()` will resume it), or null.
   * @returns {{sessionId: string, dn: string|null, callIds: string[]}|null}
   */
  get storedSession() {
    const r = this._restore;
    return r ? { sessionId: r.sessionId, dn: r.dn ?? null, callIds: r.calls.map((c) => c.callId) } : null;
  }

  /**
   * Opens the socket; resolves with the `hello` payload. With a stored session (a page reload) it
   * resumes it instead: the result then carries the session's own ids and `resumed: true`, and the
   * calls the gateway still holds come back (`callRestored`); if it cannot be resumed, a fresh session starts.
   */
  connect() {
    if (this.state === 'connected') return Promise.resolve(this._hello);
    if (this.state === 'reconnecting') return this.ping().then(() => this._hello);
    return (this._connecting ||= new Promise((resolve, reject) => {
      this._settle = { resolve, reject };
      this.state = 'connecting';
      this._listen(true);
      this._open(!!this._restore);
    }).finally(() => { this._connecting = this._settle = null; }));
  }

  /**
   * Closes for good, releasing local calls and forgetting the stored session; the gateway ends the
   * calls after its grace period.
   */
  close() {
    clearTimeout(this._timer);
    this._ws?.close(1000);
    this._ws = null;
    this._restore = null;
    this._drop('client closed', 'local');
  }

  /**
   * Registers a DN; resolves with `{dn, expires}` after the registrar's answer.
   * @param {string} dn @param {string} password @param {{displayName?: string, expires?: number}} [o]
   */
  register(dn, password, { displayName, expires } = {}) {
    return this._request('register', { dn, password, displayName, expires });
  }

  /** REGISTER with Expires: 0. */
  unregister() { return this._request('unregister'); }

  /** Resolves with `{time}`. */
  ping() { return this._request('ping'); }

  /**
   * Places a call: microphone, offer (after ICE gathering, at most 2 s), `call`, then the answer.
   * @param {string} to  a DN or a SIP URI
   * @param {{headers?: Object<string,string>, stream?: MediaStream}} [o]  X- headers; a stream to send
   *   instead of `getUserMedia({audio: true})` (the client does not stop its tracks)
   * @returns {Promise<Call>}
   */
  async call(to, { headers, stream } = {}) {
    const call = this._new({ direction: 'outgoing', to, state: 'calling' });
    try {
      const pc = this._peer(call);
      await this._mic(call, stream);
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc);
      const res = await this._request('call', { to, sdp: pc.localDescription.sdp, headers });
      this.calls.set((call.callId = res.callId), call);
      this._emit('outgoingCall', { callId: call.callId, to });
      this._trickle(call);
      await pc.setRemoteDescription({ type: 'answer', sdp: res.sdp });
      this._addRemote(call);
      return call;
    } catch (e) {
      if (this.calls.has(call.callId)) this.hangup(call.callId).catch(() => {});
      else this._release(call);
      throw this._ended(call) || e;
    }
  }

  /**
   * Answers an `incomingCall` with the microphone (or `o.stream`).
   * @param {string} callId @param {{stream?: MediaStream}} [o] @returns {Promise<Call>}
   */
  async answer(callId, { stream } = {}) {
    const call = this.calls.get(callId);
    if (call?.state !== 'incoming') throw new GatewayError('invalid_state', 'no incoming call ' + callId);
    call.state = 'answering';
    const pc = this._peer(call);
    call._trickle = true;
    try {
      await pc.setRemoteDescription({ type: 'offer', sdp: call._offer });
      this._addRemote(call);
      await this._mic(call, stream);
      await pc.setLocalDescription(await pc.createAnswer());
      await gathered(pc);
      await this._request('answer', { callId, sdp: pc.localDescription.sdp });
      return call;
    } catch (e) {
      const ended = this._ended(call);
      if (!ended) Object.assign(call, this._release(call) || { pc: null, state: 'incoming', _trickle: false });
      throw ended || e;
    }
  }

  /** Rejects an unanswered incoming call. @param {string} callId @param {486|603|480} [status=486] */
  reject(callId, status = 486) { return this._request('reject', { callId, status }); }

  /** Ends a call in any state; its `hangup` event follows. @param {string} callId */
  async hangup(callId) {
    try {
      return await this._request('hangup', { callId });
    } catch (e) {
      if (e.code === 'no_such_call' && this.calls.has(callId)) this._hangup({ callId, by: 'local', cause: e.message });
      throw e;
    }
  }

  /**
   * Sends DTMF toward SIP. @param {string} callId @param {string} digits  `0-9*#A-D`, up to 32
   * @param {{duration?: number, method?: 'rfc4733'|'info'}} [o]
   */
  dtmf(callId, digits, { duration, method } = {}) { return this._request('dtmf', { callId, digits, duration, method }); }

  /** Hold (re-INVITE sendonly). @param {string} callId */
  hold(callId) { return this._request('hold', { callId }); }

  /** Off hold. @param {string} callId */
  unhold(callId) { return this._request('unhold', { callId }); }

  /** Blind transfer (REFER); progress as `transferState`. @param {string} callId @param {string} to */
  transfer(callId, to) { return this._request('transfer', { callId, to }); }

  /**
   * Restarts ICE on a call (offer with new ICE credentials, `renegotiate`, the gateway's answer), or
   * builds it a fresh RTCPeerConnection when it has no working one (a re-attach that failed). Waits for
   * the socket when it is down; a restart already under way for the call is shared, not doubled.
   * Resolves with the call once its connection is back; rejects with the gateway's error (`bad_request`
   * from a v1 gateway, `no_such_call`, `invalid_state`) or `media_failed`. Progress as `callRecovery`.
   * @param {string} callId @returns {Promise<Call>}
   */
  renegotiate(callId) {
    const call = this.calls.get(callId);
    if (!call) return Promise.reject(new GatewayError('no_such_call', 'no call ' + callId));
    if (!this._attached(call)) return Promise.reject(new GatewayError('invalid_state', 'call ' + callId + ' has no media yet'));
    call._autoTries = 0;
    return this._recover(call, 'manual').then(() => call);
  }

  _open(resuming) {
    let ws;
    try { ws = this._ws = new WebSocket(this.url); } catch (e) { return this._drop(e.message, 'server'); }
    let greeted = false;
    ws.onmessage = (ev) => {
      if (ws !== this._ws) return;
      let msg;
      try { msg = JSON.parse(ev.data) || {}; } catch { return; }
      if (greeted) return this._frame(msg);
      if (msg.type !== 'hello') return;
      greeted = true;
      const hello = msg.payload || {};
      this._emit('hello', hello);
      if (resuming) return this._resume(ws, hello);
      this._fresh(hello);
    };
    // 4000: resumed elsewhere; resuming back would ping-pong.
    ws.onclose = (ev) => ev.code === 4000 && ws === this._ws
      ? ((this._ws = null), this._drop('resumed elsewhere', 'server'))
      // A stored session that cannot even be reached is reported like any failed connect (the store is
      // kept for the next try); once greeted, it is ours to resume.
      : this._lost(ws, greeted || (resuming && !this._restore));
  }

  _fresh(hello, detail) {
    const { sessionId, resumeToken, iceServers } = (this._hello = hello);
    Object.assign(this, { sessionId, resumeToken, iceServers: Array.isArray(iceServers) ? iceServers : [] });
    this._up({ state: 'connected', resumed: false, ...detail });
    this._settle?.resolve(hello);
  }

  async _resume(ws, hello) {
    const restoring = this._restore;
    let res;
    try {
      res = await this._request('resume', { sessionId: this.sessionId, resumeToken: this.resumeToken }, true);
    } catch (e) {
      if (ws !== this._ws) return; // dropped again: the next attempt follows
      if (restoring) {
        // The grace period is over (or the token is stale): this connection's own session is a fresh start.
        this._restore = null;
        this._clearStore();
        return this._fresh(hello, { reason: 'resume failed: ' + e.message });
      }
      this._ws = null;
      ws.close(1000);
      return this._drop('resume failed: ' + e.message, 'server');
    }
    // Fresh TURN credentials (v1.1); a v1 gateway sends none, and after a reload the hello's are all there is.
    if (Array.isArray(res.iceServers)) this._setIceServers(res.iceServers);
    else if (restoring) this.iceServers = Array.isArray(hello.iceServers) ? hello.iceServers : [];
    const listed = Array.isArray(res.calls) ? res.calls : [];
    const restored = [];
    let registered = false;
    if (restoring) {
      this._restore = null;
      this._hello = { ...hello, sessionId: this.sessionId, resumeToken: this.resumeToken, iceServers: this.iceServers };
      if (res.dn && (this.registration.dn !== res.dn || this.registration.state !== 'registered')) {
        this.registration = { dn: res.dn, state: 'registered' };
        registered = true;
      }
      // Calls the gateway no longer lists ended while the page was away: they are simply not brought back.
      for (const callId of listed) {
        if (this.calls.has(callId)) continue;
        const kept = restoring.calls.find((c) => c.callId === callId);
        const call = this._restored(callId, kept);
        this.calls.set(callId, call);
        restored.push(call);
      }
    }
    // Synchronously with the result: the frames the gateway held back follow it and must find the calls.
    this._up({ state: 'connected', resumed: true, restored: !!restoring, calls: listed, dn: res.dn });
    if (restoring) this._settle?.resolve({ ...this._hello, resumed: true });
    if (registered) this._emit('registrationState', { dn: res.dn, state: 'registered', reason: 'resumed' });
    for (const call of restored) {
      this._emit('callRestored', { callId: call.callId, call });
      if (call.state !== 'incoming') this._reattach(call);
    }
    // The socket dropping often means the network changed under the media too.
    if (!restoring && this.autoRecover) {
      for (const call of this.calls.values()) if (this._attached(call)) this._recover(call, 'resume').catch(() => {});
    }
  }

  /** A call object for a call the gateway still holds after a reload, from what was stored of it. */
  _restored(callId, kept) {
    const fields = {};
    for (const k of KEPT) if (kept?.[k] !== undefined) fields[k] = kept[k];
    // Unknown: the page reloaded before a `call` result was kept. It is the gateway's call all the same.
    const call = this._new({ direction: 'outgoing', state: 'answered', ...fields, callId, restored: true });
    call.headers ||= {};
    // An answer cut short by the reload: ring again; `answered`, if the gateway got it, re-attaches.
    if (call.state === 'answering') call.state = 'incoming';
    if (call.state === 'incoming') {
      if (kept?.offer) call._offer = kept.offer;
      else call.state = 'answered';
    }
    return call;
  }

  _reattach(call) {
    call._autoTries = 0;
    this._recover(call, 'reload', true).catch(() => {});
  }

  _setIceServers(iceServers) {
    this.iceServers = iceServers;
    if (this.rtcConfig.iceServers) return;
    // Live connections need the new TURN credentials for the candidates of their next restart.
    for (const call of this.calls.values()) {
      try { call.pc?.setConfiguration(this._rtc()); } catch { /* a closed or incompatible pc keeps its own */ }
    }
  }

  _rtc() {
    return { ...this.rtcConfig, iceServers: this.rtcConfig.iceServers ?? this.iceServers };
  }

  _up(detail) {
    this.state = 'connected';
    this._attempt = this._quickRetries = 0;
    clearInterval(this._pinger);
    if (this.keepAlive > 0) this._pinger = setInterval(() => this._probe(), this.keepAlive);
    this._emit('connection', detail);
    for (const w of this._waiting.splice(0)) this._request(w.type, w.payload).then(w.resolve, w.reject);
    for (const w of this._onUp.splice(0)) w.resolve();
  }

  /** Resolves when the socket is up (at once if it is); rejects once the session is lost. */
  _connected() {
    if (this.state === 'connected') return Promise.resolve();
    if (this.state === 'closed') return Promise.reject(new GatewayError('closed', 'not connected'));
    return new Promise((resolve, reject) => this._onUp.push({ resolve, reject }));
  }

  _probe() {
    const ws = this._ws;
    const t = setTimeout(() => { if (ws === this._ws) { ws.close(); this._lost(ws, true); } }, this.keepAlive / 2);
    this.ping().catch(() => {}).finally(() => clearTimeout(t));
  }

  _lost(ws, hadSession, delay) {
    if (ws !== this._ws) return;
    this._ws = null;
    clearInterval(this._pinger);
    this._fail(new GatewayError('disconnected', 'connection lost'));
    if (!hadSession) return this._drop('could not connect to ' + this.url, undefined, !!this._restore);
    if (!this.autoReconnect) return this._drop('connection lost', 'server');
    if (this.state !== 'reconnecting') {
      this.state = 'reconnecting';
      this._emit('connection', { state: 'reconnecting' });
    }
    const d = this.reconnectDelays;
    // Right after `online` the new network may not route yet (DHCP, routes, VPN still coming up):
    // retry briefly and often before falling back to the backoff.
    const quick = this._quickRetries > 0 ? (this._quickRetries--, 150) : undefined;
    this._timer = setTimeout(() => this._open(true), delay ?? quick ?? d[Math.min(this._attempt++, d.length - 1)]);
  }

  /**
   * The browser's network is back (often a different one): the socket may be bound to an address that
   * is gone, and waiting for missed pings would take seconds, so reconnect now; the calls restart ICE.
   */
  _networkBack() {
    if (this.autoReconnect) {
      this._attempt = 0;
      this._quickRetries = 10;
      const ws = this._ws;
      if (this.state === 'connected' && ws) {
        ws.close();
        this._lost(ws, true, 0);
      } else if (this.state === 'reconnecting' && ws?.readyState !== 1) {
        // An attempt may hang on the old network: start over on the new one.
        this._ws = null;
        ws?.close();
        clearTimeout(this._timer);
        this._open(true);
      }
    }
    if (!this.autoRecover) return;
    for (const call of this.calls.values()) if (this._attached(call)) this._recover(call, 'online').catch(() => {});
  }

  _listen(on) {
    const g = globalThis;
    if (typeof g.addEventListener !== 'function') return;
    const f = on ? 'addEventListener' : 'removeEventListener';
    g[f]('online', this._online);
    g[f]('pagehide', this._pagehide);
  }

  // the session is lost, with its calls and registration
  _drop(reason, by, keepStore) {
    clearInterval(this._pinger);
    const was = this.state;
    this.state = 'closed';
    this._listen(false);
    const err = new GatewayError('closed', reason);
    this._fail(err, true);
    for (const w of this._onUp.splice(0)) w.reject(err);
    this._settle?.reject(err);
    for (const callId of [...this.calls.keys()]) this._hangup({ callId, by, cause: reason });
    const { dn, state } = this.registration;
    if (state !== 'unregistered') this._frame({ type: 'registrationState', payload: { dn, state: 'unregistered', reason } });
    if (!keepStore) this._clearStore();
    if (was !== 'closed') this._emit('connection', { state: 'closed', reason });
  }

  _fail(err, queued) {
    const all = [...this._pending.values(), ...(queued ? this._waiting.splice(0) : [])];
    this._pending.clear();
    for (const r of all) r.reject(err);
  }

  _request(type, payload, direct) {
    if (!direct && /connecting/.test(this.state)) {
      return new Promise((resolve, reject) => this._waiting.push({ type, payload, resolve, reject }));
    }
    const ws = this._ws;
    if (ws?.readyState !== 1 || (!direct && this.state !== 'connected')) {
      return Promise.reject(new GatewayError('not_connected', 'not connected'));
    }
    const id = 'c' + ++this._seq;
    return new Promise((resolve, reject) => {
      this._pending.set(id, { resolve, reject });
      ws.send(JSON.stringify(payload ? { type, id, payload } : { type, id }));
    });
  }

  _frame({ type, id, payload }) {
    const p = payload || {};
    if (id != null && (type === 'result' || type === 'error')) {
      const req = this._pending.get(id);
      if (!req) return;
      this._pending.delete(id);
      return type === 'result' ? req.resolve(p) : req.reject(new GatewayError(p.code, p.message, p.sipStatus));
    }
    const call = this.calls.get(p.callId);
    switch (type) {
      case 'registrationState':
        this.registration = { dn: p.dn, state: p.state };
        break;
      case 'incomingCall':
        if (!p.callId || call) return;
        this.calls.set(p.callId, this._new({
          ...p, sdp: undefined, direction: 'incoming', state: 'incoming', _offer: p.sdp,
          headers: p.headers || {}, placedForAgent: p.direction === 'outbound', autoAnswer: p.autoAnswer ?? null,
        }));
        if (this.autoAnswer && Number.isFinite(p.autoAnswer)) {
          setTimeout(() => this._answerForAgent(p.callId), Math.max(0, p.autoAnswer) * 1000);
        }
        break;
      case 'answerRequested':
        if (this.autoAnswer) this._answerForAgent(p.callId);
        break;
      case 'callUpdated':
        if (call) call.headers = p.headers || {};
        break;
      case 'ringing': case 'earlyMedia': case 'answered': case 'held': case 'resumed':
        if (!call || (type === 'ringing' && call.state !== 'calling')) break;
        // A restored call still ringing here that the gateway reports answered: its answer got through
        // before the reload, so its media comes back the way every restored call's does.
        if (type === 'answered' && call.restored && !call.pc) this._reattach(call);
        call.state = type === 'resumed' ? 'answered' : type;
        if (type === 'answered') call.answeredAt = Date.now();
        break;
      case 'iceCandidate':
        if (call) {
          call._remote.push(p.candidate);
          // Mid-restart they belong to the answer still on its way; they wait for it.
          if (call.pc?.remoteDescription && !call._renegotiating) this._addRemote(call);
        }
        break;
      case 'hangup':
        return this._hangup(p);
      case 'hello':
        return;
    }
    this._emit(type, p);
  }

  /** Answers a call the server (or the call itself) asked to be answered, if it still rings here. */
  _answerForAgent(callId) {
    if (this.calls.get(callId)?.state !== 'incoming') return;
    this.answer(callId).catch((e) => this._emit('error', { code: e.code || 'internal', message: 'auto-answer: ' + e.message }));
  }

  _emit(type, detail) {
    this._save();
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _new(fields) {
    return {
      callId: null, pc: null, remoteStream: new MediaStream(), localStream: null, startedAt: Date.now(),
      recovery: null, restored: false, data: {},
      _own: false, _trickle: false, _local: [], _remote: [], ...fields,
    };
  }

  _ended(call) {
    return call.state === 'ended' && new GatewayError('hangup', 'call ended: ' + call.cause);
  }

  /** A call whose media has been set up at least once (or was, before a reload) and can be restarted. */
  _attached(call) {
    return !!call.callId && this.calls.get(call.callId) === call
      && !['incoming', 'answering', 'ended'].includes(call.state) && (call.restored || !!call.pc?.remoteDescription);
  }

  _peer(call) {
    const pc = (call.pc = new RTCPeerConnection(this._rtc()));
    pc.onicecandidate = ({ candidate: c }) => {
      if (c && !c.candidate) return; // end of a generation; the null follows
      call._local.push(c && { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex });
      if (call._trickle) this._trickle(call);
    };
    pc.ontrack = ({ track }) => {
      if (!call.remoteStream.getTrackById(track.id)) call.remoteStream.addTrack(track);
      this._emit('track', { callId: call.callId, stream: call.remoteStream, track });
    };
    const watch = () => this._watch(call, pc);
    pc.addEventListener('connectionstatechange', watch);
    pc.addEventListener('iceconnectionstatechange', watch);
    return pc;
  }

  /** Starts a restart when the connection breaks: at once on `failed`, after `recoveryDelay` on `disconnected`. */
  _watch(call, pc) {
    if (pc !== call.pc) return;
    const s = link(pc);
    if (s !== 'disconnected') { clearTimeout(call._debounce); call._debounce = null; }
    if (s === 'connected') call._autoTries = 0;
    else if (s === 'failed') this._auto(call, 'failed');
    // A brief blip (a lost burst of consent checks) recovers by itself; a restart would only add churn.
    else if (s === 'disconnected' && !call._debounce) {
      call._debounce = setTimeout(() => {
        call._debounce = null;
        if (pc === call.pc && link(pc) === 'disconnected') this._auto(call, 'disconnected');
      }, this.recoveryDelay);
    }
  }

  _auto(call, reason) {
    if (!this.autoRecover || !this._attached(call) || call._recovery) return;
    // A path that stays broken after a few restarts is not helped by more; a network change or resume will try again.
    if ((call._autoTries = (call._autoTries || 0) + 1) > AUTO_TRIES) return;
    this._recover(call, reason).catch(() => {});
  }

  /**
   * Runs a call's recovery: waits for the socket, then offer -> `renegotiate` -> answer, then waits for
   * the connection. One at a time per call: a trigger while one waits for the socket joins it; one while
   * it runs makes it go again once done (the network may have changed under its offer).
   */
  _recover(call, reason, fresh = false) {
    const cur = call._recovery;
    if (cur) {
      if (cur.running) { cur.again = reason; cur.wake?.(); }
      return cur.promise;
    }
    const rec = (call._recovery = { running: false, again: null, wake: null });
    rec.promise = (async () => {
      let why = reason;
      try {
        for (;;) {
          await this._connected();
          if (this._ended(call) || !this.calls.has(call.callId)) throw new GatewayError('hangup', 'call ended');
          rec.running = true;
          rec.again = null;
          this._recovery(call, 'restarting', why);
          let err = null;
          try {
            await this._exchange(call, fresh);
            fresh = false;
            if (!(await linked(call.pc, RECOVERY_TIMEOUT, rec))) {
              err = new GatewayError('media_failed', 'the connection did not come back after the restart');
            }
          } catch (e) {
            err = e;
          }
          rec.running = false;
          if (this._ended(call)) throw new GatewayError('hangup', 'call ended');
          // A socket that dropped under the request: the resume brings it back and the restart goes again.
          const lostSocket = err && ['disconnected', 'not_connected'].includes(err.code) && this.state === 'reconnecting';
          if (rec.again || lostSocket) { why = rec.again || why; continue; }
          if (err) throw err;
          this._recovery(call, 'recovered', why);
          return;
        }
      } catch (e) {
        if (e.code === 'no_such_call' && this.calls.get(call.callId) === call) {
          this._hangup({ callId: call.callId, by: 'server', cause: 'gone: ' + e.message });
        } else if (this.calls.get(call.callId) === call) {
          this._recovery(call, 'failed', why, e);
        }
        throw e;
      } finally {
        call._recovery = null;
      }
    })();
    return rec.promise;
  }

  _recovery(call, state, reason, err) {
    call.recovery = state === 'recovered' ? null : state;
    this._emit('callRecovery', {
      callId: call.callId, state, reason, ...(err && { code: err.code || 'internal', message: err.message }),
    });
  }

  /**
   * One offer/answer through `renegotiate`: an ICE restart on the call's connection, or (`fresh`, or no
   * connection that ever had an answer) a new RTCPeerConnection with the microphone, whose new DTLS
   * fingerprint makes the gateway run a new handshake.
   */
  async _exchange(call, fresh) {
    let pc = call.pc;
    if (fresh || !pc?.remoteDescription) {
      pc?.close();
      for (const t of call.remoteStream.getTracks()) call.remoteStream.removeTrack(t);
      call._local = [];
      call._remote = [];
      pc = this._peer(call);
      if (call.localStream) for (const t of call.localStream.getAudioTracks()) pc.addTrack(t, call.localStream);
      else await this._mic(call);
    }
    // Candidates wait for the offer to reach the gateway (they belong to its new ICE credentials).
    call._trickle = false;
    call._renegotiating = true;
    try {
      await pc.setLocalDescription(await pc.createOffer({ iceRestart: !fresh }));
      // Shorter than for a new call: media is down now, and whatever comes later trickles after the answer.
      await gathered(pc, 1000);
      const res = await this._request('renegotiate', { callId: call.callId, sdp: pc.localDescription.sdp });
      if (pc !== call.pc || this._ended(call)) throw this._ended(call) || new GatewayError('invalid_state', 'superseded');
      await pc.setRemoteDescription({ type: 'answer', sdp: res.sdp });
    } catch (e) {
      // Back to the working description (a v1 gateway refuses the request): the call goes on as it was.
      if (pc.signalingState === 'have-local-offer') await pc.setLocalDescription({ type: 'rollback' }).catch(() => {});
      call._local = [];
      throw e;
    } finally {
      call._renegotiating = false;
      if (pc.remoteDescription && pc === call.pc) this._addRemote(call);
      if (pc === call.pc) this._trickle(call);
    }
  }

  async _mic(call, stream) {
    const s = stream || (await navigator.mediaDevices.getUserMedia({ audio: true }));
    Object.assign(call, { localStream: s, _own: !stream });
    const ended = this._ended(call);
    if (ended) throw (this._release(call), ended);
    for (const t of s.getAudioTracks()) call.pc.addTrack(t, s);
  }

  _trickle(call) {
    call._trickle = true;
    const { callId } = call;
    for (const candidate of call._local.splice(0)) this._request('iceCandidate', { callId, candidate }).catch(() => {});
  }

  _addRemote(call) {
    for (const c of call._remote.splice(0)) call.pc.addIceCandidate(c || undefined).catch(() => {});
  }

  _hangup(d) {
    const call = this.calls.get(d.callId);
    if (call && this.calls.delete(d.callId)) this._release(Object.assign(call, { cause: d.cause }));
    this._emit('hangup', d);
  }

  _release(call) {
    call.state = 'ended';
    clearTimeout(call._debounce);
    call._recovery?.wake?.();
    call.pc?.close();
    if (call._own) call.localStream?.getTracks().forEach((t) => t.stop());
  }

  _load() {
    if (!this.persist) return null;
    try {
      const s = JSON.parse(sessionStore()?.getItem(this._key) || 'null');
      if (s?.url !== this.url || typeof s.sessionId !== 'string' || typeof s.resumeToken !== 'string') return null;
      return { ...s, calls: Array.isArray(s.calls) ? s.calls.filter((c) => typeof c?.callId === 'string') : [] };
    } catch {
      return null;
    }
  }

  /** Keeps the session and its calls for a reload; only while there is a session to keep. */
  _save() {
    if (!this.persist || !this.sessionId || !/^(connected|reconnecting)$/.test(this.state)) return;
    const calls = [];
    for (const call of this.calls.values()) {
      const kept = {};
      for (const k of KEPT) kept[k] = call[k];
      // The gateway's offer, so that a call still ringing can be answered after the reload.
      if (call.state === 'incoming' || call.state === 'answering') kept.offer = call._offer;
      calls.push(kept);
    }
    const { url, sessionId, resumeToken } = this;
    try {
      sessionStore()?.setItem(this._key, JSON.stringify({ url, sessionId, resumeToken, dn: this.registration.dn, calls }));
    } catch { /* full or forbidden: the page just won't survive a reload */ }
  }

  _clearStore() {
    try { sessionStore()?.removeItem(this._key); } catch { /* nothing kept then */ }
  }
}
