// {{name}}: answers each message with a greeting (the config's `greeting`, "hello" by default).
import { agent, log, text } from './agora.js';

let greeting = 'hello';

export const { init, handle, handleBatch, notify, terminate } = agent({
  init(config) {
    greeting = config.greeting ?? greeting;
  },
  handle(message) {
    const who = text(message.payload);
    log(`greeting ${who}`);
    // A returned value answers a `call`.
    return `${greeting}, ${who}!`;
  },
});
