import { describe, expect, it } from 'vitest';
import { heldBack } from '../../src/app/policy.js';

describe('policy panel', () => {
  it('says what the default throttle tiers hold back at a pressure level', () => {
    // default tiers: background (>= 192) from 0.5, normal (>= 128) too from 0.75
    expect([0, 0.49, 0.5, 0.74, 0.75, 1].map(heldBack)).toEqual([
      'nothing is held back',
      'nothing is held back',
      'background work waits',
      'background work waits',
      'normal and background work wait',
      'normal and background work wait',
    ]);
  });
});
