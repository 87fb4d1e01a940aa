// A counter in JavaScript that carries its value across upgrades of its code: the Rust counter's
// commands (`inc`, `add <n>`, `set <n>`, `get`) and state format (`{"value":3,"held":null}`), so
// that either can take over from the other. Built for the `stateful-agent` world; `version`
// replies `js`.
import { agent, log, Reject, text } from '../../../guest-sdk/js/agora.js';

export const { init, handle, handleBatch, notify, terminate, state } = agent({
  value: 0,
  held: null,
  init(config) {
    this.value = Number(config.start || 0);
  },
  handle(message) {
    const [command, argument] = text(message.payload).split(' ');
    const number = () => {
      const n = Number(argument);
      if (!Number.isInteger(n)) throw new Reject(`not a number: ${argument}`);
      return n;
    };
    switch (command) {
      case 'inc': this.value += 1; break;
      case 'add': this.value += number(); break;
      case 'set': this.value = number(); break;
      case 'get': break;
      case 'version': return 'js';
      default: throw new Reject(`unknown command ${text(message.payload)}`);
    }
    return String(this.value);
  },
  snapshot() {
    return JSON.stringify({ value: this.value, held: this.held });
  },
  restore(config, state, fromVersion) {
    const saved = JSON.parse(text(state));
    this.value = saved.value;
    this.held = saved.held ?? null;
    log(`js counter restored at ${this.value} from ${fromVersion}`);
  },
});
