/*
 * The deterministic key set every vector file uses: awkward keys (empty,
 * control characters, non-ASCII, 1000 bytes), random keys and Manta-style
 * paths. Shared by make-vectors.js and make-leveldb-vectors.js.
 */
'use strict';

/* A small deterministic PRNG so the key set never changes between runs. */
var seed = 0x2545F491;
function rnd() {
    seed ^= seed << 13; seed >>>= 0;
    seed ^= seed >>> 17;
    seed ^= seed << 5; seed >>>= 0;
    return seed;
}
var ALPHABET = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789' +
    '/-_. :%@+';
function randomKey() {
    var n = rnd() % 60;
    var s = '';
    for (var i = 0; i < n; i++) {
        s += ALPHABET[rnd() % ALPHABET.length];
    }
    return s;
}

function makeKeys() {
    var keys = [
        '', ' ', '  ', 'a', 'a b', ' leading', 'trailing ', 'tab\there',
        'new\nline', 'quote"inside', 'back\\slash',
        '/poseidon/stor/foo.txt',
        '/5d3f2b8e-4f6e-4a6f-9d5e-1c2b3a4d5e6f/stor/logs/2024/01/01/00/a.log',
        'déjà vu', '日本語のキー', 'Ελληνικά', 'emoji 🎉 key', 'ÅÄÖ åäö',
        'null\u0000byte', '\u2028sep', 'Ω≈ç√∫', 'x'.repeat(1000)
    ];
    for (var i = 0; i < 400; i++) {
        keys.push(randomKey());
    }
    /* Owner-style keys as electric-moray sees them. */
    for (i = 0; i < 100; i++) {
        keys.push('/' + (rnd().toString(16)) + '-' + i + '/stor/obj' + i);
    }
    return keys;
}

module.exports = makeKeys;
