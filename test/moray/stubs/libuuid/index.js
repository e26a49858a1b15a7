'use strict';
/* libuuid's API as the moray client uses it: create() returns a v4 UUID. */
var crypto = require('crypto');
module.exports = {
    create: function create() { return (crypto.randomUUID()); }
};
