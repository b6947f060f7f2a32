// The shell plugin's scope check for `Command.sidecar(name, args)`, as tauri-plugin-shell 2
// applies it (scope.rs `_prepare`): the allowed args are positional; a string is a fixed
// argument, `{validator}` a value matched against `^validator$` (or the bare regex with
// `raw: true`). Tauri substitutes fixed arguments and drops extra ones silently; this check is
// stricter and demands that the app passes exactly the list the capability describes.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';

export const SRC_TAURI = resolve(import.meta.dirname, '..', '..', 'src-tauri');

export type AllowedArg = string | { validator: string; raw?: boolean };
export interface ShellScopeEntry {
  name: string;
  cmd?: string;
  sidecar?: boolean;
  args?: boolean | AllowedArg[];
}

interface PermissionObject {
  identifier: string;
  allow?: unknown[];
  deny?: unknown[];
}
export interface CapabilityFile {
  identifier: string;
  windows?: string[];
  permissions: (string | PermissionObject)[];
}

export function readCapability(): CapabilityFile {
  return JSON.parse(readFileSync(resolve(SRC_TAURI, 'capabilities', 'default.json'), 'utf8'));
}

export function spawnScope(capability: CapabilityFile = readCapability()): ShellScopeEntry[] {
  const out: ShellScopeEntry[] = [];
  for (const p of capability.permissions) {
    if (typeof p === 'object' && p.identifier === 'shell:allow-spawn') {
      out.push(...((p.allow ?? []) as ShellScopeEntry[]));
    }
  }
  return out;
}

/** Returns why `args` are refused for the sidecar `program`, or null when they are allowed. */
export function checkSidecarArgs(
  program: string,
  args: readonly string[],
  scope: ShellScopeEntry[] = spawnScope(),
): string | null {
  const entry = scope.find((e) => e.name === program);
  if (!entry) return `scoped command ${program} not found`;
  if (entry.sidecar !== true) return `${program} is not a sidecar entry`;
  const allowed = entry.args ?? false;
  if (allowed === true) return null;
  if (allowed === false) return args.length === 0 ? null : `${program} takes no arguments`;
  if (args.length !== allowed.length) {
    return `expected ${allowed.length} arguments, got ${args.length}: ${JSON.stringify(args)}`;
  }
  for (let i = 0; i < allowed.length; i++) {
    const rule = allowed[i]!;
    const value = args[i]!;
    if (typeof rule === 'string') {
      if (value !== rule) return `argument ${i} must be ${rule}, got ${value}`;
    } else {
      const re = new RegExp(rule.raw ? rule.validator : `^${rule.validator}$`);
      if (!re.test(value)) return `argument ${i} (${value}) fails validation ${re}`;
    }
  }
  return null;
}
