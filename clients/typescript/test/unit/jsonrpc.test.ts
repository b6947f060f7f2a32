// The JSON-RPC core alone (src/jsonrpc.ts), over a stub link: no process, no
// supervisor; the test decides when calls may go out.
import { describe, expect, it } from 'vitest';
import { TaskmillError, clientError } from '../../src/errors.js';
import { JsonRpcPeer, type PeerLink } from '../../src/jsonrpc.js';

function peer(handlers: PeerLink['requestHandlers'] = new Map()) {
  const written: Record<string, any>[] = [];
  const notifications: [string, unknown][] = [];
  const errors: Error[] = [];
  let open = false;
  const link: PeerLink = {
    write: (line) => void written.push(JSON.parse(line)),
    canSend: () => open,
    onNotification: (method, params) => void notifications.push([method, params]),
    requestHandlers: handlers,
    reportError: (err) => void errors.push(err),
  };
  const rpc = new JsonRpcPeer(link, 0);
  const answer = (msg: object) => rpc.receive(JSON.stringify({ jsonrpc: '2.0', ...msg }));
  return { rpc, written, notifications, errors, answer, setOpen: (v: boolean) => void (open = v) };
}

describe('JsonRpcPeer', () => {
  it('queues calls until sendQueued, then writes them in call order', async () => {
    const { rpc, written, answer, setOpen } = peer();
    const a = rpc.request('ping', {});
    const b = rpc.request('task.get', { id: 1 });
    expect(written).toEqual([]);
    setOpen(true);
    rpc.sendQueued();
    const c = rpc.request('ping', {});
    expect(written.map((m) => [m.id, m.method])).toEqual([[1, 'ping'], [2, 'task.get'], [3, 'ping']]);
    answer({ id: 3, result: { now: 3 } });
    answer({ id: 1, result: { now: 1 } });
    answer({ id: 2, error: { code: -32001, message: 'no task 1', data: { kind: 'taskNotFound' } } });
    await expect(a).resolves.toEqual({ now: 1 });
    await expect(c).resolves.toEqual({ now: 3 });
    await expect(b).rejects.toMatchObject({ kind: 'taskNotFound', method: 'task.get' });
  });

  it('rejectCalls fails only the chosen set, naming each method', async () => {
    const { rpc, setOpen } = peer();
    setOpen(true);
    const sent = rpc.request('task.list', {}).catch((e: unknown) => e);
    setOpen(false);
    const queued = rpc.request('ping', {}).catch((e: unknown) => e);
    rpc.rejectCalls('sent', clientError('sidecarExited', 'gone'));
    const err = (await sent) as TaskmillError;
    expect(err).toBeInstanceOf(TaskmillError);
    expect(err.message).toBe('task.list: gone');
    rpc.rejectCalls('queued', clientError('closed', 'closed'));
    expect(await queued).toMatchObject({ kind: 'closed', method: 'ping' });
  });

  it('routes notifications and handled requests, and answers any other request -32601', () => {
    const seen: unknown[] = [];
    const { rpc, written, notifications, answer } = peer(
      new Map([['task.execute', (id: unknown, params: unknown) => void seen.push([id, params])]]),
    );
    answer({ method: 'task.progress', params: { id: 1 } });
    answer({ id: 'x', method: 'task.execute', params: { task: {} } });
    answer({ id: 9, method: 'toString', params: {} });
    expect(notifications).toEqual([['task.progress', { id: 1 }]]);
    expect(seen).toEqual([['x', { task: {} }]]);
    rpc.respond('x', { result: {} });
    expect(written).toEqual([
      { jsonrpc: '2.0', id: 9, error: { code: -32601, message: 'method not found: toString', data: { kind: 'methodNotFound' } } },
      { jsonrpc: '2.0', id: 'x', result: {} },
    ]);
  });

  it('drops the answer to a request nobody waits for, and reports unknown ids', () => {
    const { rpc, written, errors, answer } = peer();
    rpc.requestIgnoringAnswer('shutdown', { graceMs: 10 });
    expect(written).toEqual([{ jsonrpc: '2.0', id: 1, method: 'shutdown', params: { graceMs: 10 } }]);
    answer({ id: 1, result: {} });
    expect(errors).toEqual([]);
    answer({ id: 1, result: {} });
    expect(errors.map((e) => e.message)).toEqual(['an answer for an unknown id 1']);
  });
});
