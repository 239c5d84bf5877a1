"use strict";

var $protobuf = require($DEPENDENCY);

// Ferry: 64-bit fields (seqs, offsets, times) decode as plain numbers, not Long objects.
// Every value the protocol allows fits in 2^53 and validation rejects the rest. This runs
// before the code below, which reads util.Long for its field defaults.
$protobuf.util.Long = undefined;
$protobuf.configure();

$OUTPUT;

$DEFAULT_EXPORTmodule.exports = $root;
