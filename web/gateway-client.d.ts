/**
 * Types of gateway-client.js: the browser client for the SIP/WebRTC gateway's JSON protocol
 * (PROTOCOL.md, v1 with the v1.1 additions). The field names are the protocol's.
 */

/** Error codes of PROTOCOL.md, and the client's own (`not_connected`, `disconnected`, `closed`, `hangup`, `media_failed`). */
export type GatewayErrorCode =
  | 'bad_json' | 'bad_request' | 'too_large' | 'unauthorized' | 'not_registered' | 'already_registered'
  | 'auth_failed' | 'no_such_call' | 'invalid_state' | 'busy' | 'timeout' | 'upstream_unavailable'
  | 'rate_limited' | 'media_failed' | 'internal'
  | 'not_connected' | 'disconnected' | 'closed' | 'hangup'
  // a newer gateway may send codes this version does not know
  | (string & {});

/** An `error` reply of the gateway, or a client-side failure. */
export declare class GatewayError extends Error {
  constructor(code: GatewayErrorCode, message?: string, sipStatus?: number);
  readonly name: 'GatewayError';
  code: GatewayErrorCode;
  /** Set when a SIP response caused the error. */
  sipStatus?: number;
}

export type CallState =
  | 'calling' | 'incoming' | 'answering' | 'ringing' | 'earlyMedia' | 'answered' | 'held' | 'ended';

/** Why a call's media is being recovered. */
export type RecoveryReason = 'disconnected' | 'failed' | 'online' | 'resume' | 'reload' | 'manual';

/** One call, as `GatewayClient.calls` holds it. */
export interface Call {
  /** null only while `call()` waits for the gateway's result. */
  callId: string | null;
  direction: 'outgoing' | 'incoming';
  state: CallState;
  to?: string;
  from?: string;
  displayName?: string;
  /** The SIP side's `X-*` (and `User-to-User`) headers, e.g. `X-Genesys-CallUUID`. */
  headers?: Record<string, string>;
  /** An incoming call placed on the agent's behalf (3pcc or click-to-dial). */
  placedForAgent?: boolean;
  /** Seconds after which the call asked to be answered by itself, or null. */
  autoAnswer?: number | null;
  pc: RTCPeerConnection | null;
  /** Far-end audio. */
  remoteStream: MediaStream;
  /** What is sent (the microphone unless a stream was given). */
  localStream: MediaStream | null;
  /** Epoch ms. */
  startedAt: number;
  /** Epoch ms, once answered. */
  answeredAt?: number;
  /** Set once the call has ended (the `hangup` cause). */
  cause?: string;
  /** null while the media path is fine; see the `callRecovery` event. */
  recovery: null | 'restarting' | 'failed';
  /** The call came back after a page reload. */
  restored: boolean;
  /** The app's own notes; JSON-serializable, kept with the call across a page reload. */
  data: Record<string, unknown>;
}

export interface GatewayClientOptions {
  /** Reconnect and `resume` after an unexpected close. Default true. */
  autoReconnect?: boolean;
  /** ms before each reconnect attempt; the last repeats. Default [250, 500, 1000, 2000, 4000]. */
  reconnectDelays?: number[];
  /** ms between `ping`s; no reply within half of that drops the socket; 0 turns it off. Default 20000. */
  keepAlive?: number;
  /** Answer by itself when the gateway asks (`answerRequested`) or an `incomingCall` carries `autoAnswer`. Default true. */
  autoAnswer?: boolean;
  /**
   * Extras for every RTCPeerConnection (`iceTransportPolicy: 'relay'`, `bundlePolicy`, ...). Its
   * `iceServers`, when given, replace the gateway's; without them the gateway's are used.
   */
  rtcConfig?: RTCConfiguration;
  /** Restart ICE by itself (connection `disconnected` or `failed`, the browser's `online` event, after a resume). Default true. */
  autoRecover?: boolean;
  /** ms a connection may stay `disconnected` before a restart. Default 1000. */
  recoveryDelay?: number;
  /** Keep the session and its calls in `sessionStorage`, so `connect()` after a page reload resumes them. Default true. */
  persist?: boolean;
  /** `sessionStorage` key prefix; the url follows it. Default `'gateway-client:'`. */
  storagePrefix?: string;
}

// ---------- server payloads ----------

export interface Hello {
  sessionId: string;
  resumeToken: string;
  version: number;
  /** What RTCPeerConnection should use; TURN credentials may be per session and short-lived. */
  iceServers: RTCIceServer[];
}

/** What `connect()` resolves with: after a page reload, the resumed session's own ids and `resumed: true`. */
export type ConnectResult = Hello & { resumed?: boolean };

export interface RegistrationStateEvent {
  dn: string | null;
  state: 'registered' | 'unregistered' | 'failed';
  reason?: string;
  sipStatus?: number;
}

export interface IncomingCallEvent {
  callId: string;
  from: string;
  displayName?: string;
  to: string;
  /** The gateway's offer. */
  sdp: string;
  headers?: Record<string, string>;
  /** `outbound`: placed on the agent's behalf (3pcc INVITE without SDP, REST click-to-dial). */
  direction?: 'inbound' | 'outbound';
  /** Seconds after which the call asks to be answered by itself. */
  autoAnswer?: number;
}

export interface RingingEvent { callId: string; sipStatus: number }
export interface EarlyMediaEvent { callId: string }
export interface AnsweredEvent { callId: string; by?: 'local' | 'remote' | 'api' }
export interface HoldEvent { callId: string; by: 'local' | 'remote' | 'api' }
export interface DtmfEvent { callId: string; digit: string; duration: number; method: 'rfc4733' | 'info' }
export interface IceCandidateEvent { callId: string; candidate: RTCIceCandidateInit | null }
export interface TransferStateEvent {
  callId: string;
  state: 'trying' | 'accepted' | 'succeeded' | 'failed';
  sipStatus?: number;
}
export interface HangupEvent {
  callId: string;
  /** Absent only when the client itself ended its calls because the session could not be resumed. */
  by?: 'local' | 'remote' | 'server';
  cause: string;
  sipStatus?: number;
}
export interface ErrorEventPayload { code: GatewayErrorCode; message: string }
export interface AnswerRequestedEvent { callId: string; by: 'remote' | 'api' }
export interface CallUpdatedEvent { callId: string; headers: Record<string, string> }

// ---------- the client's own events ----------

export interface TrackEvent { callId: string; stream: MediaStream; track: MediaStreamTrack }

export interface ConnectionEvent {
  state: 'connected' | 'reconnecting' | 'closed';
  reason?: string;
  /** The session was resumed (after a socket drop, or a reload). */
  resumed?: boolean;
  /** The session was taken back from `sessionStorage` after a page reload. */
  restored?: boolean;
  /** The calls the gateway still holds (on a resume). */
  calls?: string[];
  dn?: string;
}

export interface OutgoingCallEvent { callId: string; to: string }

/** After a page reload: a call the gateway still holds is back in `calls`; its media follows. */
export interface CallRestoredEvent { callId: string; call: Call }

export interface CallRecoveryEvent {
  callId: string;
  state: 'restarting' | 'recovered' | 'failed';
  reason: RecoveryReason;
  /** On `failed`: why (`bad_request` from a v1 gateway, `media_failed`, ...). */
  code?: GatewayErrorCode;
  message?: string;
}

export interface GatewayClientEventMap {
  hello: CustomEvent<Hello>;
  registrationState: CustomEvent<RegistrationStateEvent>;
  incomingCall: CustomEvent<IncomingCallEvent>;
  ringing: CustomEvent<RingingEvent>;
  earlyMedia: CustomEvent<EarlyMediaEvent>;
  answered: CustomEvent<AnsweredEvent>;
  held: CustomEvent<HoldEvent>;
  resumed: CustomEvent<HoldEvent>;
  dtmf: CustomEvent<DtmfEvent>;
  iceCandidate: CustomEvent<IceCandidateEvent>;
  transferState: CustomEvent<TransferStateEvent>;
  hangup: CustomEvent<HangupEvent>;
  error: CustomEvent<ErrorEventPayload>;
  answerRequested: CustomEvent<AnswerRequestedEvent>;
  callUpdated: CustomEvent<CallUpdatedEvent>;
  track: CustomEvent<TrackEvent>;
  connection: CustomEvent<ConnectionEvent>;
  outgoingCall: CustomEvent<OutgoingCallEvent>;
  callRestored: CustomEvent<CallRestoredEvent>;
  callRecovery: CustomEvent<CallRecoveryEvent>;
}

/** A result without a payload. */
export type Empty = Record<string, never>;

/** What `sessionStorage` holds from before a page reload. */
export interface StoredSession { sessionId: string; dn: string | null; callIds: string[] }

/** One gateway session; survives socket drops by resuming it, and page reloads by storing it. */
export declare class GatewayClient extends EventTarget {
  /** @param url e.g. `ws://host:8081/` */
  constructor(url: string, options?: GatewayClientOptions);

  readonly url: string;
  state: 'closed' | 'connecting' | 'connected' | 'reconnecting';
  /** From `hello`; after a resume (or a reload) still the original ones. */
  sessionId: string | null;
  resumeToken: string | null;
  /** The gateway's ICE servers (`hello`, refreshed by each `resume`). */
  iceServers: RTCIceServer[];
  /** Last known registration. */
  registration: { dn: string | null; state: 'registered' | 'unregistered' | 'failed' };
  /** Live calls by callId. */
  calls: Map<string, Call>;
  autoReconnect: boolean;
  reconnectDelays: number[];
  keepAlive: number;
  autoAnswer: boolean;
  rtcConfig: RTCConfiguration;
  autoRecover: boolean;
  recoveryDelay: number;
  persist: boolean;
  /** A session stored before a page reload, which `connect()` will resume; null when there is none. */
  readonly storedSession: StoredSession | null;

  /** Opens the socket; resumes a stored session (a page reload) when there is one. */
  connect(): Promise<ConnectResult>;
  /** Closes for good and forgets the stored session; the gateway ends the calls after its grace period. */
  close(): void;
  register(dn: string, password: string, options?: { displayName?: string; expires?: number }): Promise<{ dn: string; expires: number }>;
  unregister(): Promise<Empty>;
  ping(): Promise<{ time: number }>;
  /** Places a call with the microphone (or `options.stream`). */
  call(to: string, options?: { headers?: Record<string, string>; stream?: MediaStream }): Promise<Call>;
  /** Answers an `incomingCall`. */
  answer(callId: string, options?: { stream?: MediaStream }): Promise<Call>;
  reject(callId: string, status?: 486 | 603 | 480): Promise<Empty>;
  hangup(callId: string): Promise<Empty>;
  dtmf(callId: string, digits: string, options?: { duration?: number; method?: 'rfc4733' | 'info' }): Promise<Empty>;
  hold(callId: string): Promise<Empty>;
  unhold(callId: string): Promise<Empty>;
  transfer(callId: string, to: string): Promise<Empty>;
  /** Restarts ICE on a call (or re-attaches it with a fresh RTCPeerConnection); resolves once its media is back. */
  renegotiate(callId: string): Promise<Call>;

  addEventListener<K extends keyof GatewayClientEventMap>(
    type: K,
    listener: (this: GatewayClient, ev: GatewayClientEventMap[K]) => unknown,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof GatewayClientEventMap>(
    type: K,
    listener: (this: GatewayClient, ev: GatewayClientEventMap[K]) => unknown,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;
}
