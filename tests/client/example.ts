// A web app's use of the client package, type-checked (never run) by tests/it/client_package.rs:
// every public method, option and event, with the types a strict app would rely on.
import {
  GatewayClient,
  GatewayError,
  type Call,
  type CallRecoveryEvent,
  type ConnectResult,
  type ConnectionEvent,
  type GatewayClientOptions,
  type GatewayErrorCode,
  type StoredSession,
} from '@gateway/client';

const options: GatewayClientOptions = {
  autoReconnect: true,
  reconnectDelays: [250, 1000],
  keepAlive: 20000,
  autoAnswer: false,
  // Only TURN (e.g. a firewall that blocks UDP): the gateway's iceServers are kept.
  rtcConfig: { iceTransportPolicy: 'relay', bundlePolicy: 'max-bundle' },
  autoRecover: true,
  recoveryDelay: 1000,
  persist: true,
  storagePrefix: 'my-app:',
};
const client = new GatewayClient('wss://gateway.example.com/', options);

// Shown in the UI: which calls need "reconnecting media…".
const recovering = new Map<string, CallRecoveryEvent['state']>();

function show(call: Call): string {
  const peer = call.direction === 'outgoing' ? call.to : call.displayName ?? call.from;
  const since = call.answeredAt ?? call.startedAt;
  const note = typeof call.data['note'] === 'string' ? call.data['note'] : '';
  return `${peer ?? '?'} ${call.state} ${Math.round((Date.now() - since) / 1000)}s ${call.recovery ?? ''} ${note}`;
}

function play(stream: MediaStream): void {
  const audio = document.createElement('audio');
  audio.autoplay = true;
  audio.srcObject = stream;
  document.body.append(audio);
}

client.addEventListener('hello', (e) => {
  const servers: RTCIceServer[] = e.detail.iceServers;
  console.log(e.detail.sessionId, e.detail.resumeToken, e.detail.version, servers.length);
});
client.addEventListener('connection', (e) => {
  const { state, reason, resumed, restored, calls, dn } = e.detail;
  if (state === 'closed') console.warn('offline:', reason);
  if (resumed) console.log('resumed', restored ? 'after a reload' : 'after a drop', calls?.length, dn);
});
client.addEventListener('registrationState', (e) => {
  const state: 'registered' | 'unregistered' | 'failed' = e.detail.state;
  console.log(e.detail.dn, state, e.detail.reason, e.detail.sipStatus);
});
client.addEventListener('incomingCall', async (e) => {
  const { callId, from, displayName, to, headers, direction, autoAnswer } = e.detail;
  console.log(from, displayName, to, headers?.['X-Genesys-CallUUID'], direction === 'outbound', autoAnswer);
  if (from.startsWith('sip:spam')) {
    await client.reject(callId, 603);
    return;
  }
  const call = await client.answer(callId);
  call.data['note'] = 'answered by the agent';
});
client.addEventListener('answerRequested', (e) => { void client.answer(e.detail.callId); });
client.addEventListener('ringing', (e) => console.log(e.detail.callId, e.detail.sipStatus));
client.addEventListener('earlyMedia', (e) => console.log(e.detail.callId));
client.addEventListener('answered', (e) => console.log(e.detail.callId, e.detail.by));
client.addEventListener('held', (e) => console.log(e.detail.by));
client.addEventListener('resumed', (e) => console.log(e.detail.by));
client.addEventListener('dtmf', (e) => console.log(e.detail.digit, e.detail.duration, e.detail.method));
client.addEventListener('iceCandidate', (e) => console.log(e.detail.candidate?.candidate));
client.addEventListener('transferState', (e) => {
  if (e.detail.state === 'failed') console.warn('transfer failed', e.detail.sipStatus);
});
client.addEventListener('callUpdated', (e) => console.log(Object.keys(e.detail.headers)));
client.addEventListener('outgoingCall', (e) => console.log(e.detail.callId, e.detail.to));
client.addEventListener('track', (e) => {
  const track: MediaStreamTrack = e.detail.track;
  if (track.kind === 'audio') play(e.detail.stream);
});
client.addEventListener('callRestored', (e) => {
  const call: Call = e.detail.call;
  console.log('back after the reload:', e.detail.callId, show(call), call.restored);
});
client.addEventListener('callRecovery', (e) => {
  const { callId, state, reason, code, message } = e.detail;
  if (state === 'recovered') recovering.delete(callId);
  else recovering.set(callId, state);
  if (state === 'failed') console.warn(`media of ${callId} (${reason}) not back: ${code}: ${message}`);
});
client.addEventListener('hangup', (e) => {
  const { callId, by, cause, sipStatus } = e.detail;
  recovering.delete(callId);
  console.log(callId, by ?? 'client', cause, sipStatus);
});
client.addEventListener('error', (e) => console.error(e.detail.code, e.detail.message));

// A named listener, so it can be removed again.
const onState = (e: CustomEvent<ConnectionEvent>): void => console.log(e.detail.state);
client.addEventListener('connection', onState);
client.removeEventListener('connection', onState);

async function main(): Promise<void> {
  // After a page reload the stored session is resumed by connect() itself.
  const stored: StoredSession | null = client.storedSession;
  const hello: ConnectResult = await client.connect();
  if (!hello.resumed) {
    const { dn, expires } = await client.register('5001', 'secret', { displayName: 'Agent', expires: 300 });
    console.log(dn, expires, stored?.callIds.length);
  }
  const { time } = await client.ping();
  console.log(time, client.state, client.sessionId, client.resumeToken, client.iceServers, client.registration.dn);

  const mic = await navigator.mediaDevices.getUserMedia({ audio: true });
  const call = await client.call('1003', { headers: { 'X-Ticket': '42' }, stream: mic });
  const callId = call.callId;
  if (callId === null) throw new Error('a placed call has its id');
  await client.dtmf(callId, '12#', { duration: 120, method: 'rfc4733' });
  await client.hold(callId);
  await client.unhold(callId);
  // The agent's network changed (or the app knows better than the browser): restart ICE now.
  const again: Call = await client.renegotiate(callId);
  console.log(again.pc?.connectionState, again.remoteStream.id, again.localStream?.id);
  await client.transfer(callId, '1004');
  for (const c of client.calls.values()) if (c.callId) await client.hangup(c.callId);
  await client.unregister();
  client.close();
}

main().catch((e: unknown) => {
  if (e instanceof GatewayError) {
    const code: GatewayErrorCode = e.code;
    console.error(code, e.sipStatus, e.message);
  }
});

// The checks must be able to fail: each line below is a wrong use the declarations refuse.
// @ts-expect-error  a callId is a string
void client.renegotiate(42);
// @ts-expect-error  persist is a boolean
new GatewayClient('ws://h/', { persist: 'yes' });
// @ts-expect-error  callRecovery has no state 'done'
client.addEventListener('callRecovery', (e) => e.detail.state === 'done');
// @ts-expect-error  reject takes 486, 603 or 480
void client.reject('c1', 500);
