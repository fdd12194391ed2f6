"""KServe's own ``InferenceGRPCClient`` against a server's gRPC port, typed contents and raw: one JSON line.

Run by ``tests/integration/test_grpc.py`` with the KServe peer's venv (``benchmarks/peers``), where KServe
is installed: ``python kserve_grpc_client.py --url 127.0.0.1:P --model NAME --rows rows.json [--cert C]
[--api-key K]`` (rows: ``{feature: [values]}``).
"""

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest


def tensor(name: str, values: list[float], raw: bool) -> Any:
    if not raw:
        return InferInput(name, [len(values), 1], "FP64", data=values)
    made = InferInput(name, [len(values), 1], "FP64")
    made.set_data_from_numpy(np.array(values, dtype=np.float64).reshape(-1, 1), binary_data=True)
    return made


async def main() -> None:
    parser = argparse.ArgumentParser()
    for flag in ("--url", "--model", "--rows", "--cert", "--api-key"):
        parser.add_argument(flag)
    args = parser.parse_args()
    rows: dict[str, list[float]] = json.loads(Path(args.rows).read_text())
    headers = [("authorization", f"Bearer {args.api_key}")] if args.api_key else None
    results: dict[str, Any] = {}
    client = InferenceGRPCClient(args.url, use_ssl=bool(args.cert), root_certificates=args.cert, retries=0)
    async with client:
        results["ready"] = await client.is_server_ready()
        for mode in ("typed", "raw"):
            inputs = [tensor(name, values, raw=mode == "raw") for name, values in rows.items()]
            request = InferRequest(args.model, inputs, request_id=f"kserve-{mode}")
            response = await client.infer(request, headers=headers)
            parameters = {
                k: getattr(v, v.WhichOneof("parameter_choice")) for k, v in response.parameters.items()
            }
            results[mode] = {
                "id": response.id,
                "model_version": response.model_version,
                "parameters": parameters,
                "outputs": {o.name: o.as_numpy().ravel().tolist() for o in response.outputs},
            }
    print(json.dumps(results))


if __name__ == "__main__":
    asyncio.run(main())
