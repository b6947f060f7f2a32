// The real-sidecar harness lives with the client package's tests now; the example's tests (the
// browser test) use the same one.
export * from '../../../clients/typescript/test/helpers/sidecar.js';
