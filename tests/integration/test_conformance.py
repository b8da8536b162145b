"""RFC 6455 conformance of wsgate's /echo, modelled on Autobahn|Testsuite case groups
1 (framing), 2 (ping/pong), 3 (reserved bits), 4 (opcodes), 5 (fragmentation),
6 (UTF-8), 7 (close handling) and 9 (large messages).

Every case is its own test method named after its Autobahn case id (test_5_6_... is
Autobahn 5.6). Cases marked "x" (test_5_x1_...) are wsgate additions in the same group.
Each asserts the exact outcome: the echoed frames' opcode and bytes, the close code, and
that the server closes the TCP connection after a close. Differences from Autobahn's
verdicts are deliberate and stricter: where Autobahn accepts "fail fast or fail at the end"
(6.4.x) we require fail fast, and where it says "informational" (7.13.x, 7.1.6) we assert
the outcome SPEC/RFC behaviour implies.

The gateway runs with its default --max-message (1 MiB)."""

import os
import time
import unittest

from wsgate_fixture import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT,
                            GatewayTestCase, build_frame, close_payload, frame_header,
                            mask_bytes)

MIB = 1 << 20
FRAME_WISE, OCTET_WISE = "frame", "octet"
KOSME = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"    # "κόσμε" as Autobahn spells it (U+1F79)
INVALID_UTF8 = KOSME + b"\xed\xa0\x80" + b"edited"          # Autobahn 6.3.x: a lone surrogate
QUIET_S = 0.3        # "nothing arrives" window


def F(opcode, payload=b"", fin=True, rsv=0):
    """A masked client frame."""
    return build_frame(opcode, payload, fin=fin, rsv=rsv)


class ConformanceBase(GatewayTestCase):
    GATEWAY_KW = dict(threads=2, echo=True)

    def send(self, c, frames, mode=None):
        """Send a list of encoded frames: all in one write (mode None), one write per
        frame with a pause (FRAME_WISE), or one byte per write (OCTET_WISE)."""
        if mode is None:
            return c.send_raw(b"".join(frames))
        for fr in frames:
            if mode == FRAME_WISE:
                if not c.send_raw(fr):
                    return False
                time.sleep(0.02)
            else:
                if not c.send_raw(fr, chop=1, delay=0.0005):
                    return False
        return True

    def assertQuiet(self, c, seconds=QUIET_S):
        f = c.poll_frame(seconds)
        self.assertIsNone(f, "expected nothing from the server")

    def echo_case(self, opcode, payload, frames=None, mode=None):
        c = self.ws()
        self.send(c, frames or [F(opcode, payload)], mode)
        self.assertEcho(c, opcode, payload)
        self.assertCleanClose(c, 1000)

    def fail_case(self, frames, code, before=(), mode=None):
        c = self.ws()
        self.send(c, frames, mode)
        self.assertFailed(c, code, before)


# ---------------------------------------------------------------------------------------
# 1 Framing: text (1.1.x) and binary (1.2.x) at the payload-length encoding boundaries
# ---------------------------------------------------------------------------------------
def _add_framing_cases(cls):
    lengths = [0, 125, 126, 127, 128, 65535, 65536]
    for group, opcode, fill, name in ((1, OP_TEXT, b"*", "text"), (2, OP_BINARY, b"\xfe", "binary")):
        for i, n in enumerate(lengths, start=1):
            def case(self, opcode=opcode, n=n, fill=fill):
                self.echo_case(opcode, fill * n)
            setattr(cls, f"test_1_{group}_{i}_{name}_length_{n}", case)

        def chopped(self, opcode=opcode, fill=fill):
            c = self.ws()
            payload = fill * 65536
            c.send_raw(F(opcode, payload), chop=997)
            self.assertEcho(c, opcode, payload)
            self.assertCleanClose(c, 1000)
        setattr(cls, f"test_1_{group}_8_{name}_65536_in_997_byte_chops", chopped)

        def non_minimal(self, opcode=opcode, fill=fill):
            # 16-bit length field for a 5-byte payload: unusual encoding, valid framing
            # per most servers; wsgate may accept (echo) or fail 1002, but nothing else.
            c = self.ws()
            c.send_raw(build_frame(opcode, fill * 5, length_bits=16))
            f = c.recv_frame()
            if f.opcode == OP_CLOSE:
                self.assertEqual(f.close_code, 1002)
            else:
                self.assertEqual((f.opcode, f.payload), (opcode, fill * 5))
        setattr(cls, f"test_1_{group}_x1_{name}_non_minimal_length_encoding", non_minimal)
    return cls


# ---------------------------------------------------------------------------------------
# 6.5 - 6.23: Markus Kuhn's UTF-8 decoder test sequences, numbered as Autobahn numbers them
# ---------------------------------------------------------------------------------------
def _utf8_groups():
    groups = []
    groups.append([(True, b"hello\x24world"), (True, b"hello\xc2\xa2world"),
                   (True, b"hello\xe2\x82\xacworld"), (True, b"hello\xf0\xa4\xad\xa2world"),
                   (True, KOSME)])                                              # 6.5
    prefixes = []
    for i in range(1, len(KOSME) + 1):
        try:
            KOSME[:i].decode("utf-8")
            prefixes.append((True, KOSME[:i]))
        except UnicodeDecodeError:
            prefixes.append((False, KOSME[:i]))
    groups.append(prefixes)                                                     # 6.6
    groups.append([(True, b"\x00"), (True, b"\xc2\x80"), (True, b"\xe0\xa0\x80"),
                   (True, b"\xf0\x90\x80\x80")])                                # 6.7
    groups.append([(False, b"\xf8\x88\x80\x80\x80"), (False, b"\xfc\x84\x80\x80\x80\x80")])  # 6.8
    groups.append([(True, b"\x7f"), (True, b"\xdf\xbf"), (True, b"\xef\xbf\xbf"),
                   (True, b"\xf4\x8f\xbf\xbf")])                                # 6.9
    groups.append([(False, b"\xf7\xbf\xbf\xbf"), (False, b"\xfb\xbf\xbf\xbf\xbf"),
                   (False, b"\xfd\xbf\xbf\xbf\xbf\xbf")])                       # 6.10
    groups.append([(True, b"\xed\x9f\xbf"), (True, b"\xee\x80\x80"), (True, b"\xef\xbf\xbd"),
                   (True, b"\xf4\x8f\xbf\xbf"), (False, b"\xf4\x90\x80\x80")])  # 6.11
    groups.append([(False, b"\x80"), (False, b"\xbf"), (False, b"\x80\xbf"),
                   (False, b"\x80\xbf\x80"), (False, b"\x80\xbf\x80\xbf"),
                   (False, b"\x80\xbf\x80\xbf\x80"), (False, b"\x80\xbf\x80\xbf\x80\xbf"),
                   (False, bytes(range(0x80, 0xbf)))])                          # 6.12
    groups.append([(False, b"".join(bytes([c, 0x20]) for c in range(lo, hi)))
                   for lo, hi in ((0xc0, 0xdf), (0xe0, 0xef), (0xf0, 0xf7), (0xf8, 0xfb),
                                  (0xfc, 0xfd))])                               # 6.13
    missing = [b"\xc0", b"\xe0\x80", b"\xf0\x80\x80", b"\xf8\x80\x80\x80", b"\xfc\x80\x80\x80\x80",
               b"\xdf", b"\xef\xbf", b"\xf7\xbf\xbf", b"\xfb\xbf\xbf\xbf", b"\xfd\xbf\xbf\xbf\xbf"]
    groups.append([(False, m) for m in missing])                                # 6.14
    groups.append([(False, b"".join(missing))])                                 # 6.15
    groups.append([(False, b"\xfe"), (False, b"\xff"), (False, b"\xfe\xfe\xff\xff")])  # 6.16
    groups.append([(False, b"\xc0\xaf"), (False, b"\xe0\x80\xaf"), (False, b"\xf0\x80\x80\xaf"),
                   (False, b"\xf8\x80\x80\x80\xaf"), (False, b"\xfc\x80\x80\x80\x80\xaf")])  # 6.17
    groups.append([(False, b"\xc1\xbf"), (False, b"\xe0\x9f\xbf"), (False, b"\xf0\x8f\xbf\xbf"),
                   (False, b"\xf8\x87\xbf\xbf\xbf"), (False, b"\xfc\x83\xbf\xbf\xbf\xbf")])  # 6.18
    groups.append([(False, b"\xc0\x80"), (False, b"\xe0\x80\x80"), (False, b"\xf0\x80\x80\x80"),
                   (False, b"\xf8\x80\x80\x80\x80"), (False, b"\xfc\x80\x80\x80\x80\x80")])  # 6.19
    singles = [b"\xed\xa0\x80", b"\xed\xad\xbf", b"\xed\xae\x80", b"\xed\xaf\xbf",
               b"\xed\xb0\x80", b"\xed\xbe\x80", b"\xed\xbf\xbf"]
    groups.append([(False, s) for s in singles])                                # 6.20
    groups.append([(False, a + b) for a in singles[:4] for b in (b"\xed\xb0\x80", b"\xed\xbf\xbf")])  # 6.21
    nonchars = [(True, b"\xef\xbf\xbe"), (True, b"\xef\xbf\xbf")]
    for z1 in b"\xf0\xf1\xf2\xf3\xf4":
        for z2 in b"\x8f\x9f\xaf\xbf":
            if z1 == 0xf4 and z2 != 0x8f:
                continue
            for z3 in b"\xbe\xbf":
                zz = bytes([z1, z2, 0xbf, z3])
                if zz not in (b"\xf0\x8f\xbf\xbe", b"\xf0\x8f\xbf\xbf"):
                    nonchars.append((True, zz))
    groups.append(nonchars)                                                     # 6.22
    groups.append([(True, bytes([0xef, 0xbf, c])) for c in range(0xb9, 0xc0)])  # 6.23
    # Self-check of the table against Python's strict UTF-8 decoder (RFC 3629).
    for g in groups:
        for valid, payload in g:
            try:
                payload.decode("utf-8")
                ok = True
            except UnicodeDecodeError:
                ok = False
            assert ok == valid, payload
    return groups


def _add_utf8_cases(cls):
    for gi, group in enumerate(_utf8_groups(), start=5):
        for ci, (valid, payload) in enumerate(group, start=1):
            if valid:
                def case(self, payload=payload):
                    self.echo_case(OP_TEXT, payload)
                name = f"test_6_{gi}_{ci}_valid_utf8_{payload[:6].hex()}"
            else:
                def case(self, payload=payload):
                    self.fail_case([F(OP_TEXT, payload)], 1007)
                name = f"test_6_{gi}_{ci}_invalid_utf8_{payload[:6].hex()}"
            setattr(cls, name, case)
    return cls


# ---------------------------------------------------------------------------------------
# 7.7 valid close codes (echoed), 7.9 / 7.13 invalid ones (1002)
# ---------------------------------------------------------------------------------------
VALID_CLOSE_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999]
INVALID_CLOSE_CODES_7_9 = [0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999]
INVALID_CLOSE_CODES_EXTRA = {"7_13_1": 5000, "7_13_2": 65535, "7_9_x1": 1015}


def _add_close_code_cases(cls):
    for i, code in enumerate(VALID_CLOSE_CODES, start=1):
        def valid(self, code=code):
            c = self.ws()
            self.assertCleanClose(c, code)
        setattr(cls, f"test_7_7_{i}_valid_close_code_{code}", valid)
    cases = {f"7_9_{i}": code for i, code in enumerate(INVALID_CLOSE_CODES_7_9, start=1)}
    cases.update(INVALID_CLOSE_CODES_EXTRA)
    for cid, code in cases.items():
        def invalid(self, code=code):
            self.fail_case([F(OP_CLOSE, close_payload(code))], 1002)
        setattr(cls, f"test_{cid}_invalid_close_code_{code}", invalid)
    return cls


@_add_framing_cases
@_add_utf8_cases
@_add_close_code_cases
class ConformanceTest(ConformanceBase):

    # --- 2 Pings/Pongs -----------------------------------------------------------------
    def ping_pong(self, payload, mode=None):
        c = self.ws()
        self.send(c, [F(OP_PING, payload)], mode)
        f = c.recv_frame()
        self.assertEqual((f.fin, f.opcode, f.payload), (True, OP_PONG, payload))
        self.assertCleanClose(c, 1000)

    def test_2_1_ping_empty(self):
        self.ping_pong(b"")

    def test_2_2_ping_small_text_payload(self):
        self.ping_pong(b"Hello, world!")

    def test_2_3_ping_small_binary_payload(self):
        self.ping_pong(b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff")

    def test_2_4_ping_125_bytes(self):
        self.ping_pong(b"\xfe" * 125)

    def test_2_5_ping_126_bytes_fails(self):
        self.fail_case([F(OP_PING, b"\xfe" * 126)], 1002)

    def test_2_6_ping_125_bytes_octet_chops(self):
        self.ping_pong(b"\xfe" * 125, OCTET_WISE)

    def test_2_7_unsolicited_pong_empty_ignored(self):
        c = self.ws()
        c.send_frame(OP_PONG)
        self.assertQuiet(c)
        self.assertCleanClose(c, 1000)

    def test_2_8_unsolicited_pong_with_payload_ignored(self):
        c = self.ws()
        c.send_frame(OP_PONG, b"unsolicited pong payload")
        self.assertQuiet(c)
        self.assertCleanClose(c, 1000)

    def test_2_9_unsolicited_pong_then_ping(self):
        c = self.ws()
        self.send(c, [F(OP_PONG, b"unsolicited pong payload"), F(OP_PING, b"ping payload")])
        f = c.recv_frame()
        self.assertEqual((f.opcode, f.payload), (OP_PONG, b"ping payload"))
        self.assertCleanClose(c, 1000)

    def _ten_pings(self, mode):
        c = self.ws()
        payloads = [f"payload-{i}".encode() for i in range(10)]
        self.send(c, [F(OP_PING, p) for p in payloads], mode)
        got = [c.recv_frame() for _ in payloads]
        self.assertEqual([(f.opcode, f.payload) for f in got], [(OP_PONG, p) for p in payloads])
        self.assertCleanClose(c, 1000)

    def test_2_10_ten_pings_answered_in_order(self):
        self._ten_pings(None)

    def test_2_11_ten_pings_frame_wise_answered_in_order(self):
        self._ten_pings(FRAME_WISE)

    # --- 3 Reserved bits ---------------------------------------------------------------
    def _rsv(self, rsv, mode, opcode=OP_TEXT):
        frames = [F(OP_TEXT, b"Hello, world!"), F(opcode, b"Hello, world!", rsv=rsv), F(OP_PING)]
        self.fail_case(frames, 1002, [(OP_TEXT, b"Hello, world!")], mode)

    def test_3_1_text_rsv1(self):
        self.fail_case([F(OP_TEXT, b"Hello, world!", rsv=1)], 1002)

    def test_3_2_text_rsv2_after_valid_message(self):
        self._rsv(2, None)

    def test_3_3_text_rsv3_frame_wise(self):
        self._rsv(3, FRAME_WISE)

    def test_3_4_text_rsv4_octet_wise(self):
        self._rsv(4, OCTET_WISE)

    def test_3_5_binary_rsv5(self):
        self.fail_case([F(OP_BINARY, b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff", rsv=5)], 1002)

    def test_3_6_ping_rsv6(self):
        self.fail_case([F(OP_PING, b"Hello, world!", rsv=6)], 1002)

    def test_3_7_close_rsv7(self):
        self.fail_case([F(OP_CLOSE, close_payload(1000), rsv=7)], 1002)

    # --- 4 Opcodes ---------------------------------------------------------------------
    def _reserved_opcode(self, opcode, payload, after_message, mode=None):
        frames = [F(opcode, payload)]
        before = []
        if after_message:
            frames = [F(OP_TEXT, b"Hello, world!")] + frames + [F(OP_PING)]
            before = [(OP_TEXT, b"Hello, world!")]
        self.fail_case(frames, 1002, before, mode)

    def test_4_1_1_opcode_3(self):
        self._reserved_opcode(3, b"", False)

    def test_4_1_2_opcode_4_with_payload(self):
        self._reserved_opcode(4, b"reserved opcode payload", False)

    def test_4_1_3_opcode_5_after_message(self):
        self._reserved_opcode(5, b"", True)

    def test_4_1_4_opcode_6_with_payload_after_message(self):
        self._reserved_opcode(6, b"reserved opcode payload", True)

    def test_4_1_5_opcode_7_octet_wise(self):
        self._reserved_opcode(7, b"reserved opcode payload", True, OCTET_WISE)

    def test_4_2_1_opcode_11(self):
        self._reserved_opcode(11, b"", False)

    def test_4_2_2_opcode_12_with_payload(self):
        self._reserved_opcode(12, b"reserved opcode payload", False)

    def test_4_2_3_opcode_13_after_message(self):
        self._reserved_opcode(13, b"", True)

    def test_4_2_4_opcode_14_with_payload_after_message(self):
        self._reserved_opcode(14, b"reserved opcode payload", True)

    def test_4_2_5_opcode_15_octet_wise(self):
        self._reserved_opcode(15, b"reserved opcode payload", True, OCTET_WISE)

    # --- 5 Fragmentation ---------------------------------------------------------------
    def test_5_1_ping_in_2_fragments(self):
        self.fail_case([F(OP_PING, b"fragment1", fin=False), F(OP_CONT, b"fragment2")], 1002)

    def test_5_2_pong_in_2_fragments(self):
        self.fail_case([F(OP_PONG, b"fragment1", fin=False), F(OP_CONT, b"fragment2")], 1002)

    def _two_fragments(self, mode):
        frames = [F(OP_TEXT, b"fragment1", fin=False), F(OP_CONT, b"fragment2")]
        self.echo_case(OP_TEXT, b"fragment1fragment2", frames, mode)

    def test_5_3_text_in_2_fragments(self):
        self._two_fragments(None)

    def test_5_4_text_in_2_fragments_frame_wise(self):
        self._two_fragments(FRAME_WISE)

    def test_5_5_text_in_2_fragments_octet_wise(self):
        self._two_fragments(OCTET_WISE)

    def _ping_between_fragments(self, mode):
        c = self.ws()
        first = [F(OP_TEXT, b"fragment1", fin=False), F(OP_PING, b"ping payload")]
        self.send(c, first, mode)
        # the pong comes now, while the message is still open
        f = c.recv_frame(timeout=2)
        self.assertEqual((f.opcode, f.payload), (OP_PONG, b"ping payload"))
        self.send(c, [F(OP_CONT, b"fragment2")], mode)
        self.assertEcho(c, OP_TEXT, b"fragment1fragment2")
        self.assertCleanClose(c, 1000)

    def test_5_6_text_ping_in_fragments(self):
        self._ping_between_fragments(None)

    def test_5_7_text_ping_in_fragments_frame_wise(self):
        self._ping_between_fragments(FRAME_WISE)

    def test_5_8_text_ping_in_fragments_octet_wise(self):
        self._ping_between_fragments(OCTET_WISE)

    def _continuation_without_start(self, fin, mode):
        frames = [F(OP_CONT, b"non-continuation payload", fin=fin), F(OP_TEXT, b"Hello, world!")]
        self.fail_case(frames, 1002, (), mode)

    def test_5_9_continuation_fin_without_start(self):
        self._continuation_without_start(True, None)

    def test_5_10_continuation_fin_without_start_frame_wise(self):
        self._continuation_without_start(True, FRAME_WISE)

    def test_5_11_continuation_fin_without_start_octet_wise(self):
        self._continuation_without_start(True, OCTET_WISE)

    def test_5_12_continuation_nofin_without_start(self):
        self._continuation_without_start(False, None)

    def test_5_13_continuation_nofin_without_start_frame_wise(self):
        self._continuation_without_start(False, FRAME_WISE)

    def test_5_14_continuation_nofin_without_start_octet_wise(self):
        self._continuation_without_start(False, OCTET_WISE)

    def test_5_15_stray_continuation_after_complete_message(self):
        frames = [F(OP_TEXT, b"fragment1", fin=False), F(OP_CONT, b"fragment2"),
                  F(OP_CONT, b"fragment3", fin=False), F(OP_TEXT, b"fragment4")]
        self.fail_case(frames, 1002, [(OP_TEXT, b"fragment1fragment2")])

    def test_5_16_continuation_nofin_then_fragmented_text_twice(self):
        frames = [F(OP_CONT, b"fragment1", fin=False), F(OP_TEXT, b"fragment2", fin=False),
                  F(OP_CONT, b"fragment3")] * 2
        self.fail_case(frames, 1002)

    def test_5_17_continuation_fin_then_fragmented_text_twice(self):
        frames = [F(OP_CONT, b"fragment1"), F(OP_TEXT, b"fragment2", fin=False),
                  F(OP_CONT, b"fragment3")] * 2
        self.fail_case(frames, 1002)

    def test_5_18_text_inside_fragmented_text(self):
        self.fail_case([F(OP_TEXT, b"fragment1", fin=False), F(OP_TEXT, b"fragment2")], 1002)

    def _5_19(self, mode):
        c = self.ws()
        self.send(c, [F(OP_TEXT, b"fragment1", fin=False), F(OP_CONT, b"fragment2", fin=False),
                      F(OP_PING, b"pongme 1!")], mode)
        f = c.recv_frame(timeout=2)
        self.assertEqual((f.opcode, f.payload), (OP_PONG, b"pongme 1!"))
        time.sleep(0.3)
        self.send(c, [F(OP_CONT, b"fragment3", fin=False), F(OP_CONT, b"fragment4", fin=False),
                      F(OP_PING, b"pongme 2!")], mode)
        f = c.recv_frame(timeout=2)
        self.assertEqual((f.opcode, f.payload), (OP_PONG, b"pongme 2!"))
        self.send(c, [F(OP_CONT, b"fragment5")], mode)
        self.assertEcho(c, OP_TEXT, b"fragment1fragment2fragment3fragment4fragment5")
        self.assertCleanClose(c, 1000)

    def test_5_19_fragments_with_pings_and_pauses(self):
        self._5_19(None)

    def test_5_20_fragments_with_pings_and_pauses_frame_wise(self):
        self._5_19(FRAME_WISE)

    def test_5_x1_text_in_1_byte_fragments(self):
        payload = b"Hello, fragmented world!"
        frames = [F(OP_TEXT if i == 0 else OP_CONT, payload[i:i + 1], fin=(i == len(payload) - 1))
                  for i in range(len(payload))]
        self.echo_case(OP_TEXT, payload, frames)

    def test_5_x2_binary_in_1_byte_fragments(self):
        payload = bytes(range(256))
        frames = [F(OP_BINARY if i == 0 else OP_CONT, payload[i:i + 1], fin=(i == 255))
                  for i in range(256)]
        self.echo_case(OP_BINARY, payload, frames)

    def test_5_x3_binary_continuation_opcode_is_the_starting_one(self):
        # a binary message continued and closed: echoed as binary, not text
        frames = [F(OP_BINARY, b"\xff\xfe", fin=False), F(OP_CONT, b"\xfd")]
        self.echo_case(OP_BINARY, b"\xff\xfe\xfd", frames)

    def test_5_x4_messages_after_fragmented_message(self):
        c = self.ws()
        self.send(c, [F(OP_TEXT, b"a", fin=False), F(OP_CONT, b"b"), F(OP_BINARY, b"c"),
                      F(OP_TEXT, b"d", fin=False), F(OP_CONT, b"e", fin=False), F(OP_CONT, b"f")])
        self.assertEcho(c, OP_TEXT, b"ab")
        self.assertEcho(c, OP_BINARY, b"c")
        self.assertEcho(c, OP_TEXT, b"def")
        self.assertCleanClose(c, 1000)

    # --- 6 UTF-8 (6.1 - 6.4; 6.5 - 6.23 are generated above) ---------------------------
    def test_6_1_1_empty_text(self):
        self.echo_case(OP_TEXT, b"")

    def test_6_1_2_three_empty_fragments(self):
        frames = [F(OP_TEXT, b"", fin=False), F(OP_CONT, b"", fin=False), F(OP_CONT, b"")]
        self.echo_case(OP_TEXT, b"", frames)

    def test_6_1_3_empty_first_and_last_fragment(self):
        frames = [F(OP_TEXT, b"", fin=False), F(OP_CONT, b"middle frame payload", fin=False),
                  F(OP_CONT, b"")]
        self.echo_case(OP_TEXT, b"middle frame payload", frames)

    HELLO_UTF8 = "Hello-µ@ßöäüàá-UTF-8!!".encode()

    def test_6_2_1_valid_utf8_one_frame(self):
        self.echo_case(OP_TEXT, self.HELLO_UTF8)

    def test_6_2_2_valid_utf8_two_fragments_on_code_point_boundary(self):
        p = self.HELLO_UTF8
        split = p.index("ß".encode())
        self.echo_case(OP_TEXT, p, [F(OP_TEXT, p[:split], fin=False), F(OP_CONT, p[split:])])

    def _one_octet_fragments(self, p):
        return [F(OP_TEXT if i == 0 else OP_CONT, p[i:i + 1], fin=(i == len(p) - 1))
                for i in range(len(p))]

    def test_6_2_3_valid_utf8_1_octet_fragments(self):
        self.echo_case(OP_TEXT, self.HELLO_UTF8, self._one_octet_fragments(self.HELLO_UTF8))

    def test_6_2_4_kosme_1_octet_fragments(self):
        self.echo_case(OP_TEXT, KOSME, self._one_octet_fragments(KOSME))

    def test_6_3_1_invalid_utf8_one_frame(self):
        self.fail_case([F(OP_TEXT, INVALID_UTF8)], 1007)

    def test_6_3_2_invalid_utf8_1_octet_fragments(self):
        self.fail_case(self._one_octet_fragments(INVALID_UTF8), 1007)

    def test_6_x4_fail_fast_on_first_impossible_byte_in_1_octet_fragments(self):
        # ED A0 can start no valid sequence (it would be a surrogate): the close must
        # come as soon as the A0 fragment is seen, without the fragments after it.
        c = self.ws()
        frames = self._one_octet_fragments(INVALID_UTF8)
        bad_at = len(KOSME) + 1          # \xed\xa0: invalid once the second byte is seen
        c.send_raw(b"".join(frames[:bad_at + 1]))
        out = c.read_until_close(timeout=2)
        self.assertEqual(out.frames, [])
        self.assertFalse(out.timed_out, "no close within 2s: not failed fast (rest never sent)")
        self.assertEqual(out.code, 1007)
        self.assertTrue(out.tcp_closed)

    P1, P2, P3 = KOSME, b"\xf4\x90\x80\x80", b"edited"   # Autobahn 6.4.x parts (U+110000)

    def _fail_fast(self, parts, single_frame):
        """Send parts[0], check the gateway waits; send parts[1], which makes the text
        invalid: the 1007 close must arrive before parts[2] is sent."""
        c = self.ws()
        payload = b"".join(parts)
        if single_frame:
            key = os.urandom(4)
            chunks, off = [], 0
            for p in parts:
                chunks.append(mask_bytes(p, key, off))
                off += len(p)
            chunks[0] = frame_header(OP_TEXT, len(payload), mask_key=key) + chunks[0]
        else:
            chunks = [F(OP_TEXT, parts[0], fin=False), F(OP_CONT, parts[1], fin=False),
                      F(OP_CONT, parts[2])]
        c.send_raw(chunks[0])
        self.assertQuiet(c)   # valid so far: the gateway must not fail yet
        c.send_raw(chunks[1])
        out = c.read_until_close(timeout=2)
        self.assertEqual(out.frames, [])
        self.assertFalse(out.timed_out, "no close within 2s of the invalid part: not failed fast")
        self.assertIsNotNone(out.close, "TCP closed without a close frame")
        self.assertEqual(out.code, 1007)
        self.assertTrue(out.tcp_closed)

    def test_6_4_1_fail_fast_on_invalid_second_fragment(self):
        self._fail_fast([self.P1, self.P2, self.P3], single_frame=False)

    def test_6_4_2_fail_fast_invalid_sequence_across_fragments(self):
        p = self.P1 + self.P2 + self.P3
        self._fail_fast([p[:12], p[12:13], p[13:]], single_frame=False)

    def test_6_4_3_fail_fast_inside_one_frame(self):
        self._fail_fast([self.P1, self.P2, self.P3], single_frame=True)

    def test_6_4_4_fail_fast_inside_one_frame_split_sequence(self):
        p = self.P1 + self.P2 + self.P3
        self._fail_fast([p[:12], p[12:13], p[13:]], single_frame=True)

    def test_6_x1_message_ends_inside_code_point(self):
        # every fragment ends on a valid prefix, but the message ends mid-sequence
        self.fail_case([F(OP_TEXT, KOSME, fin=False), F(OP_CONT, b"\xce")], 1007)

    def test_6_x2_code_point_split_across_fragments_with_ping_between(self):
        c = self.ws()
        self.send(c, [F(OP_TEXT, b"a\xe2\x82", fin=False), F(OP_PING, b"p"), F(OP_CONT, b"\xacb")])
        f = c.recv_frame()
        self.assertEqual((f.opcode, f.payload), (OP_PONG, b"p"))
        self.assertEcho(c, OP_TEXT, "a€b".encode())
        self.assertCleanClose(c, 1000)

    def test_6_x3_invalid_utf8_in_binary_is_fine(self):
        self.echo_case(OP_BINARY, INVALID_UTF8)

    # --- 7 Close handling --------------------------------------------------------------
    def test_7_1_1_message_then_close(self):
        c = self.ws()
        c.send_text("Hello World!")
        self.assertCleanClose(c, 1000, before=[(OP_TEXT, b"Hello World!")])

    def test_7_1_2_two_closes(self):
        c = self.ws()
        c.send_raw(F(OP_CLOSE, close_payload(1000)) + F(OP_CLOSE, close_payload(1000)))
        out = c.read_until_close(reply=False)
        self.assertEqual((out.frames, out.code), ([], 1000))
        self.assertTrue(out.tcp_closed, "TCP not closed after the close handshake")

    def _close_then(self, after, before=()):
        c = self.ws()
        c.send_raw(b"".join(before) + F(OP_CLOSE, close_payload(1000)) + b"".join(after))
        return c, c.read_until_close(reply=False)

    def test_7_1_3_ping_after_close_ignored(self):
        c, out = self._close_then([F(OP_PING, b"Hello World!")])
        self.assertEqual((out.frames, out.code, out.tcp_closed), ([], 1000, True))

    def test_7_1_4_text_after_close_ignored(self):
        c, out = self._close_then([F(OP_TEXT, b"Hello World!")])
        self.assertEqual((out.frames, out.code, out.tcp_closed), ([], 1000, True))

    def test_7_1_5_close_inside_fragmented_message(self):
        c, out = self._close_then([F(OP_CONT, b"fragment2")],
                                  before=[F(OP_TEXT, b"fragment1", fin=False)])
        self.assertEqual((out.frames, out.code, out.tcp_closed), ([], 1000, True))

    def test_7_1_6_large_message_then_close_then_ping(self):
        big = b"BAsd7&jh23" * 26214                       # 262140 bytes, as Autobahn
        c, out = self._close_then([F(OP_PING, b"Hello World!")], before=[F(OP_TEXT, big)])
        self.assertEqual([(f.opcode, len(f.payload)) for f in out.frames], [(OP_TEXT, len(big))])
        self.assertEqual(out.frames[0].payload, big)
        self.assertEqual((out.code, out.tcp_closed), (1000, True))

    def test_7_3_1_close_empty(self):
        self.assertCleanClose(self.ws(), None)

    def test_7_3_2_close_1_byte_payload(self):
        self.fail_case([F(OP_CLOSE, b"\x03")], 1002)

    def test_7_3_3_close_code_only(self):
        self.assertCleanClose(self.ws(), 1000)

    def test_7_3_4_close_code_and_reason(self):
        self.assertCleanClose(self.ws(), 1000, b"Hello World!")

    def test_7_3_5_close_123_byte_reason(self):
        self.assertCleanClose(self.ws(), 1000, b"*" * 123)

    def test_7_3_6_close_124_byte_reason_too_long(self):
        self.fail_case([F(OP_CLOSE, close_payload(1000, b"*" * 124))], 1002)

    def test_7_5_1_close_reason_invalid_utf8(self):
        self.fail_case([F(OP_CLOSE, close_payload(1000, INVALID_UTF8))], 1007)

    def test_7_x1_close_reason_valid_multibyte_utf8(self):
        self.assertCleanClose(self.ws(), 1000, KOSME)

    def test_7_x2_unmasked_client_frame(self):
        self.fail_case([build_frame(OP_TEXT, b"Hello, world!", mask=False)], 1002)

    def test_7_x3_unmasked_close_frame(self):
        self.fail_case([build_frame(OP_CLOSE, close_payload(1000), mask=False)], 1002)

    def test_7_x4_server_closes_tcp_without_client_close_reply(self):
        # after echoing our close the server closes TCP on its own (we never answer)
        c = self.ws()
        c.send_close(1000)
        out = c.read_until_close(reply=False, tcp_timeout=2)
        self.assertEqual((out.code, out.tcp_closed), (1000, True))

    # --- 9 Large messages --------------------------------------------------------------
    def _large(self, opcode, n, fragment=None, chop=None):
        payload = os.urandom(n) if opcode == OP_BINARY else (b"0123456789abcdef" * (n // 16 + 1))[:n]
        c = self.ws(timeout=20)
        if fragment:
            pieces = [payload[i:i + fragment] for i in range(0, n, fragment)]
            frames = [F(opcode if i == 0 else OP_CONT, p, fin=(i == len(pieces) - 1))
                      for i, p in enumerate(pieces)]
        else:
            frames = [F(opcode, payload)]
        c.send_raw(b"".join(frames), chop=chop)
        self.assertEcho(c, opcode, payload, timeout=20)
        self.assertCleanClose(c, 1000)

    def test_9_1_1_text_64k(self):
        self._large(OP_TEXT, 64 * 1024)

    def test_9_1_2_text_256k(self):
        self._large(OP_TEXT, 256 * 1024)

    def test_9_1_3_text_1m(self):
        self._large(OP_TEXT, MIB)

    def test_9_2_1_binary_64k(self):
        self._large(OP_BINARY, 64 * 1024)

    def test_9_2_2_binary_256k(self):
        self._large(OP_BINARY, 256 * 1024)

    def test_9_2_3_binary_1m(self):
        self._large(OP_BINARY, MIB)

    def test_9_3_x1_text_1m_in_64k_fragments(self):
        self._large(OP_TEXT, MIB, fragment=64 * 1024)

    def test_9_3_x2_text_1m_in_4k_fragments(self):
        self._large(OP_TEXT, MIB, fragment=4 * 1024)

    def test_9_4_x1_binary_1m_in_64k_fragments(self):
        self._large(OP_BINARY, MIB, fragment=64 * 1024)

    def test_9_4_x2_binary_1m_in_1k_fragments(self):
        self._large(OP_BINARY, MIB, fragment=1024)

    def test_9_5_x1_text_1m_in_4k_chops(self):
        self._large(OP_TEXT, MIB, chop=4096)

    def test_9_6_x1_binary_1m_in_64k_chops(self):
        self._large(OP_BINARY, MIB, chop=65536)

    def test_9_x1_text_over_limit_1009(self):
        self.fail_case([F(OP_TEXT, b"a" * (MIB + 1))], 1009)

    def test_9_x2_binary_over_limit_1009(self):
        self.fail_case([F(OP_BINARY, b"\x00" * (MIB + 1))], 1009)

    def test_9_x3_fragmented_over_limit_1009(self):
        frames = [F(OP_BINARY if i == 0 else OP_CONT, b"\x01" * 65536, fin=(i == 16))
                  for i in range(17)]
        self.fail_case(frames, 1009)

    def test_9_x4_oversized_frame_header_fails_without_payload(self):
        # A header announcing 2 MiB is enough to know: 1009 without waiting for the body.
        c = self.ws()
        key = os.urandom(4)
        c.send_raw(frame_header(OP_BINARY, 2 * MIB, mask_key=key) + mask_bytes(b"x" * 1000, key))
        out = c.read_until_close(timeout=3)
        self.assertEqual((out.frames, out.code, out.tcp_closed), ([], 1009, True))

    def test_9_x5_largest_64bit_length_1009(self):
        c = self.ws()
        key = os.urandom(4)
        c.send_raw(frame_header(OP_BINARY, (1 << 63) - 1, mask_key=key) + b"abcd")
        out = c.read_until_close(timeout=3)
        self.assertEqual((out.frames, out.code, out.tcp_closed), ([], 1009, True))

    def test_9_x6_64bit_length_with_msb_set_1002(self):
        # RFC 6455 5.2: the most significant bit of the 64-bit length MUST be 0
        c = self.ws()
        key = os.urandom(4)
        c.send_raw(frame_header(OP_BINARY, 1 << 63, mask_key=key) + b"abcd")
        out = c.read_until_close(timeout=3)
        self.assertEqual((out.frames, out.code, out.tcp_closed), ([], 1002, True))


if __name__ == "__main__":
    unittest.main()
