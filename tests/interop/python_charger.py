"""A charger written by someone else: the Python `ocpp` library's ChargePoint,
which validates every payload it receives against the official OCPP 1.6
schemas. It boots, authorizes, runs and stops a transaction against the
central system, answers a command the server sends it, and exits non-zero on
any error.

Usage: python_charger.py WS_URL ID_TAG
"""

import asyncio
import sys
from datetime import datetime, timedelta, timezone

import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action


def ts(t):
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Charger(ChargePoint):
    @on(Action.clear_cache)
    def on_clear_cache(self):
        return call_result.ClearCache(status="Accepted")


async def session(cp, id_tag):
    boot = await cp.call(call.BootNotification(charge_point_model="PyModel", charge_point_vendor="PyVendor"))
    assert boot.status == "Accepted", boot
    assert boot.interval > 0, boot
    await cp.call(call.Heartbeat())
    await cp.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Available"))
    auth = await cp.call(call.Authorize(id_tag=id_tag))
    assert auth.id_tag_info["status"] == "Accepted", auth
    start_at = datetime(2024, 1, 15, 10, 0, tzinfo=timezone.utc)
    start = await cp.call(call.StartTransaction(connector_id=1, id_tag=id_tag, meter_start=0, timestamp=ts(start_at)))
    assert start.id_tag_info["status"] == "Accepted", start
    tx = start.transaction_id
    await cp.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Charging"))
    for minute, wh in ((15, 4200), (30, 8400)):
        await cp.call(call.MeterValues(connector_id=1, transaction_id=tx, meter_value=[{
            "timestamp": ts(start_at + timedelta(minutes=minute)),
            "sampledValue": [{"value": str(wh), "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                             {"value": "50", "measurand": "SoC", "unit": "Percent"}],
        }]))
    stop = await cp.call(call.StopTransaction(meter_stop=10500, timestamp=ts(start_at + timedelta(minutes=45)),
                                              transaction_id=tx, id_tag=id_tag, reason="Local"))
    assert stop.id_tag_info["status"] == "Accepted", stop
    await cp.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Available"))
    await cp.call(call.DataTransfer(vendor_id="com.example", message_id="hello", data="{}"))
    await cp.call(call.SecurityEventNotification(type="StartupOfTheDevice", tech_info="boot", timestamp=ts(datetime.now(timezone.utc))))
    print(f"transaction {tx} done", flush=True)
    # Stay connected a little so the server can send a command and get the answer.
    await asyncio.sleep(float(sys.argv[3]) if len(sys.argv) > 3 else 0)


async def main():
    url, id_tag = sys.argv[1], sys.argv[2]
    charger_id = url.rstrip("/").rsplit("/", 1)[-1]
    async with websockets.connect(url, subprotocols=["ocpp1.6"]) as ws:
        assert ws.subprotocol == "ocpp1.6", ws.subprotocol
        cp = Charger(charger_id, ws)
        runner = asyncio.create_task(cp.start())
        try:
            await session(cp, id_tag)
        finally:
            runner.cancel()


if __name__ == "__main__":
    asyncio.run(main())
