/**
 * Browser client for the SIP/WebRTC gateway, protocol v1 (PROTOCOL.md). No dependencies.
 * Events (CustomEvent, `detail` = server payload): hello, registrationState, incomingCall, ringing,
 * earlyMedia, answered, held, resumed, dtmf, iceCandidate, transferState, hangup, error, and (v1.1)
 * answerRequested, callUpdated; and the
 * client's own: track `{callId, stream, track}`, connection `{state: connected|reconnecting|closed,
 * reason?, resumed?, calls?}`, outgoingCall `{callId, to}` (a `call()` got its callId).
 * @module gateway-client
 */

/**
 * An `error` reply (`code` from PROTOCOL.md, `sipStatus` when SIP caused it) or a client-side
 * failure: `not_connected`, `disconnected` (socket lost mid-request), `closed`, `hangup` (call ended).
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
 *   pc (RTCPeerConnection), remoteStream (far end), localStream (sent), startedAt, answeredAt (epoch ms)
 */

function gathered(pc, ms = 2000) {
  return new Promise((resolve) => {
    const check = () => { if (pc.iceGatheringState === 'complete') done(); };
    const done = () => { clearTimeout(t); pc.removeEventListener('icegatheringstatechange', check); resolve(); };
    const t = setTimeout(done, ms);
    pc.addEventListener('icegatheringstatechange', check);
    check();
  });
}

/** One gateway session; survives socket drops by resuming it. */
export class GatewayClient extends EventTarget {
  /**
   * @param {string} url  e.g. `ws://host:8081/`
   * @param {object} [o]
   * @param {boolean} [o.autoReconnect=true]  reconnect and `resume` after an unexpected close
   * @param {number[]} [o.reconnectDelays=[250,500,1000,2000,4000]]  ms before each attempt; the last repeats
   * @param {number} [o.keepAlive=20000]  ms between `ping`s; no reply within half of that drops the socket (0: off)
   * @param {boolean} [o.autoAnswer=true]  answer by itself when the server asks (`answerRequested`: the desktop
   *   or the SIP side answered for the agent) and when an `incomingCall` carries `autoAnswer`; false: only the events
   */
  constructor(url, { autoReconnect = true, reconnectDelays = [250, 500, 1000, 2000, 4000], keepAlive = 20000, autoAnswer = true } = {}) {
    super();
    Object.assign(this, { url, autoReconnect, keepAlive, autoAnswer, reconnectDelays: reconnectDelays.length ? reconnectDelays : [1000] });
    /** @type {'closed'|'connecting'|'connected'|'reconnecting'} */
    this.state = 'closed';
    /** Session id and token from `hello`; after a resume still the original ones. */
    this.sessionId = this.resumeToken = null;
    /** @type {RTCIceServer[]} */
    this.iceServers = [];
    /** Last known registration `{dn, state}`. */
    this.registration = { dn: null, state: 'unregistered' };
    /** @type {Map<string, Call>} */
    this.calls = new Map();
    this._seq = this._attempt = 0;
    this._pending = new Map();
    this._waiting = [];
  }

  /** Opens the socket; resolves with the `hello` payload. */
  connect() {
    if (this.state === 'connected') return Promise.resolve(this._hello);
    if (this.state === 'reconnecting') return this.ping().then(() => this._hello);
    return (this._connecting ||= new Promise((resolve, reject) => {
      this._settle = { resolve, reject };
      this.state = 'connecting';
      this._open(false);
    }).finally(() => { this._connecting = this._settle = null; }));
  }

  /** Closes for good, releasing local calls; the gateway ends them after its grace period. */
  close() {
    clearTimeout(this._timer);
    this._ws?.close(1000);
    this._ws = null;
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
      if (resuming) return this._resume(ws);
      const { sessionId, resumeToken, iceServers } = (this._hello = hello);
      Object.assign(this, { sessionId, resumeToken, iceServers: Array.isArray(iceServers) ? iceServers : [] });
      this._up({ state: 'connected', resumed: false });
      this._settle?.resolve(hello);
    };
    // 4000: resumed elsewhere; resuming back would ping-pong.
    ws.onclose = (ev) => ev.code === 4000 && ws === this._ws
      ? ((this._ws = null), this._drop('resumed elsewhere', 'server'))
      : this._lost(ws, greeted || resuming);
  }

  async _resume(ws) {
    try {
      const res = await this._request('resume', { sessionId: this.sessionId, resumeToken: this.resumeToken }, true);
      this._up({ state: 'connected', resumed: true, calls: res.calls || [], dn: res.dn });
    } catch (e) {
      if (ws !== this._ws) return; // dropped again: the next attempt follows
      this._ws = null;
      ws.close(1000);
      this._drop('resume failed: ' + e.message, 'server');
    }
  }

  _up(detail) {
    this.state = 'connected';
    this._attempt = 0;
    clearInterval(this._pinger);
    if (this.keepAlive > 0) this._pinger = setInterval(() => this._probe(), this.keepAlive);
    this._emit('connection', detail);
    for (const w of this._waiting.splice(0)) this._request(w.type, w.payload).then(w.resolve, w.reject);
  }

  _probe() {
    const ws = this._ws;
    const t = setTimeout(() => { if (ws === this._ws) { ws.close(); this._lost(ws, true); } }, this.keepAlive / 2);
    this.ping().catch(() => {}).finally(() => clearTimeout(t));
  }

  _lost(ws, hadSession) {
    if (ws !== this._ws) return;
    this._ws = null;
    clearInterval(this._pinger);
    this._fail(new GatewayError('disconnected', 'connection lost'));
    if (!hadSession) return this._drop('could not connect to ' + this.url);
    if (!this.autoReconnect) return this._drop('connection lost', 'server');
    if (this.state !== 'reconnecting') {
      this.state = 'reconnecting';
      this._emit('connection', { state: 'reconnecting' });
    }
    const d = this.reconnectDelays;
    this._timer = setTimeout(() => this._open(true), d[Math.min(this._attempt++, d.length - 1)]);
  }

  // the session is lost, with its calls and registration
  _drop(reason, by) {
    clearInterval(this._pinger);
    const was = this.state;
    this.state = 'closed';
    const err = new GatewayError('closed', reason);
    this._fail(err, true);
    this._settle?.reject(err);
    for (const callId of [...this.calls.keys()]) this._hangup({ callId, by, cause: reason });
    const { dn, state } = this.registration;
    if (state !== 'unregistered') this._frame({ type: 'registrationState', payload: { dn, state: 'unregistered', reason } });
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
        call.state = type === 'resumed' ? 'answered' : type;
        if (type === 'answered') call.answeredAt = Date.now();
        break;
      case 'iceCandidate':
        if (call) { call._remote.push(p.candidate); if (call.pc?.remoteDescription) this._addRemote(call); }
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

  _emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }

  _new(fields) {
    return {
      callId: null, pc: null, remoteStream: new MediaStream(), localStream: null, startedAt: Date.now(),
      _own: false, _trickle: false, _local: [], _remote: [], ...fields,
    };
  }

  _ended(call) {
    return call.state === 'ended' && new GatewayError('hangup', 'call ended: ' + call.cause);
  }

  _peer(call) {
    const pc = (call.pc = new RTCPeerConnection({ iceServers: this.iceServers }));
    pc.onicecandidate = ({ candidate: c }) => {
      if (c && !c.candidate) return; // end of a generation; the null follows
      call._local.push(c && { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex });
      if (call._trickle) this._trickle(call);
    };
    pc.ontrack = ({ track }) => {
      if (!call.remoteStream.getTrackById(track.id)) call.remoteStream.addTrack(track);
      this._emit('track', { callId: call.callId, stream: call.remoteStream, track });
    };
    return pc;
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
    call.pc?.close();
    if (call._own) call.localStream?.getTracks().forEach((t) => t.stop());
  }
}
