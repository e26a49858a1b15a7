/*
 * Compares lookup speed of node-fash 3.0.1 with reshard's ring on the same
 * ring and keys, in one run:
 *
 *   cd ring/testdata/fash
 *   npm install --ignore-scripts && npm rebuild bignum
 *   node bench.js [KEYS] [VNODES]      # defaults 200000 keys, 100000 vnodes
 *
 * It times fash getNode over the keys, writes the ring and keys to a temp
 * directory, runs the Go benchmark BenchmarkLocateKeys on them (which also
 * checks it routes every key to the vnodes fash chose), and prints both
 * rates. Needs node and go on PATH.
 */
'use strict';
var child = require('child_process');
var crypto = require('crypto');
var fs = require('fs');
var os = require('os');
var path = require('path');
var fash = require('fash');

var NKEYS = parseInt(process.argv[2] || '200000', 10);
var VNODES = parseInt(process.argv[3] || '100000', 10);
var REPO = path.join(__dirname, '..', '..', '..');

var ring = fash.create({
    algorithm: 'sha256',
    vnodes: VNODES,
    pnodes: ['tcp://1.moray.emy-11.joyent.us:2020',
        'tcp://2.moray.emy-11.joyent.us:2020',
        'tcp://3.moray.emy-11.joyent.us:2020',
        'tcp://4.moray.emy-11.joyent.us:2020'],
    backend: fash.BACKEND.IN_MEMORY
});

var keys = [];
for (var i = 0; i < NKEYS; i++) {
    keys.push('/' + crypto.createHash('md5').update(String(i)).digest('hex') +
        '/stor/dir' + (i % 100) + '/object-' + i);
}

/* Warm up, then time. */
for (i = 0; i < Math.min(10000, NKEYS); i++) {
    ring.getNode(keys[i]);
}
var sum = 0;
var t0 = process.hrtime.bigint();
for (i = 0; i < NKEYS; i++) {
    sum += ring.getNode(keys[i]).vnode;
}
var ns = Number(process.hrtime.bigint() - t0);
var fashRate = NKEYS / (ns / 1e9);

var dir = fs.mkdtempSync(path.join(os.tmpdir(), 'reshard-bench-'));
fs.writeFileSync(path.join(dir, 'ring.json'), ring.serialize());
fs.writeFileSync(path.join(dir, 'keys'), keys.join('\n') + '\n');

var out = child.execFileSync('go', ['test', '-run', '^$', '-bench',
    '^BenchmarkLocateKeys$', '-benchtime', '5x', '-benchmem', './ring/'], {
    cwd: REPO,
    env: Object.assign({}, process.env, {
        RESHARD_BENCH_RING: path.join(dir, 'ring.json'),
        RESHARD_BENCH_KEYS: path.join(dir, 'keys'),
        RESHARD_BENCH_VNODESUM: String(sum)
    }),
    encoding: 'utf8'
});
fs.rmSync(dir, {recursive: true});
var m = /BenchmarkLocateKeys\S*\s+\d+\s+.*?([\d.]+) keys\/s/.exec(out);
if (!m) {
    process.stderr.write(out);
    throw new Error('no keys/s in go test output');
}
var goRate = parseFloat(m[1]);
console.log('ring: sha256, %d vnodes; %d keys', VNODES, NKEYS);
console.log('node-fash 3.0.1 getNode: %s keys/s (%s ns/key)',
    Math.round(fashRate), (1e9 / fashRate).toFixed(0));
console.log('reshard ring.Locate:     %s keys/s (%s ns/key)',
    Math.round(goRate), (1e9 / goRate).toFixed(0));
console.log('speed-up: %sx; both routed every key to the same vnode',
    (goRate / fashRate).toFixed(1));
