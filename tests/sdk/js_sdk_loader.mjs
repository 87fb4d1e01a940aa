// Resolves the component's `agora:agent/*` imports to empty modules, for tests on Node; `batch`
// to one whose `next` is whatever a test puts in `globalThis.agoraBatchNext`.
import { register } from 'node:module';

register('data:text/javascript,' + encodeURIComponent(`
export async function resolve(specifier, context, next) {
  if (specifier.startsWith('agora:agent/batch@')) {
    const stub = 'export function next(done) { return globalThis.agoraBatchNext(done); }';
    return { url: 'data:text/javascript,' + encodeURIComponent(stub), shortCircuit: true };
  }
  if (specifier.startsWith('agora:agent/')) {
    return { url: 'data:text/javascript,export {}', shortCircuit: true };
  }
  return next(specifier, context);
}`));
