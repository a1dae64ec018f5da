#!/usr/bin/env python3
"""boto3, the reference AWS client, against fakecloud: every AWS operation buyonce's worker
calls, and every error it branches on.

fakecloud is written by the same people as the executors, so a shape both get wrong in the
same way passes every Rust test. This check uses a client nobody here wrote: each call goes
through boto3 (botocore's own serializers and parsers, generated from AWS's models), and each
raw response is also walked member by member against botocore's output shape, because
botocore's parsers silently drop what they do not know. A member the shape does not have, a
value of the wrong type, a string outside its enum or its length bounds, a list or a structure
where the other is expected: each is reported with its path, and the check exits 1.

    python3 fakecloud/tests/boto3/check_fakecloud.py http://127.0.0.1:4566

MemoryDB: botocore >= 1.44 lists `smithy-rpc-v2-cbor` before `json` for MemoryDB and would
speak CBOR; buyonce's pinned Rust SDK speaks awsJson1_1, which the model still lists, so the
check loads MemoryDB's model with `json` as its protocol (a copy on AWS_DATA_PATH).
"""

import base64
import datetime
import gzip
import json
import os
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

import botocore


def memorydb_speaks_json():
    """A copy of botocore's MemoryDB model with `json` as its protocol, on AWS_DATA_PATH."""
    source = os.path.join(os.path.dirname(botocore.__file__), "data", "memorydb", "2021-01-01")
    name = next(n for n in os.listdir(source) if n.startswith("service-2.json"))
    opener = gzip.open if name.endswith(".gz") else open
    with opener(os.path.join(source, name), "rt") as f:
        model = json.load(f)
    model["metadata"]["protocol"] = "json"
    model["metadata"]["protocols"] = ["json"]
    root = tempfile.mkdtemp(prefix="buyonce-botocore-")
    target = os.path.join(root, "memorydb", "2021-01-01")
    os.makedirs(target)
    with open(os.path.join(target, "service-2.json"), "w") as f:
        json.dump(model, f)
    os.environ["AWS_DATA_PATH"] = root


memorydb_speaks_json()

import boto3  # noqa: E402  (after AWS_DATA_PATH is set)
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

ENDPOINT = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:4566"
TAG_KEY = "buyonce-idempotency-token"
TOKEN = "4a667998cddd36583ee6f92b4e1f9fe36aeef04b9676a2007da7c5eefc9e96c0"
ONE_YEAR = 31536000

problems = []
checked = {"calls": 0, "errors": 0, "members": 0}


def problem(where, what):
    problems.append(f"{where}: {what}")


# --- raw-response validation against botocore's shapes -----------------------------------------


def check_scalar(value, shape, path):
    t = shape.type_name
    checked["members"] += 1
    if t == "string":
        if not isinstance(value, str):
            return problem(path, f"expected a string ({shape.name}), got {value!r}")
        enum = shape.metadata.get("enum")
        if enum and value not in enum:
            problem(path, f"{value!r} is not in the enum {shape.name} {enum}")
        low, high = shape.metadata.get("min"), shape.metadata.get("max")
        if low is not None and len(value) < low or high is not None and len(value) > high:
            problem(path, f"{value!r} is outside {shape.name}'s length {low}..{high}")
    elif t in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            problem(path, f"expected an integer ({shape.name}), got {value!r}")
    elif t in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problem(path, f"expected a number ({shape.name}), got {value!r}")
    elif t == "boolean":
        if not isinstance(value, bool):
            problem(path, f"expected a boolean ({shape.name}), got {value!r}")
    elif t == "timestamp":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            problem(path, f"expected epoch seconds ({shape.name}), got {value!r}")
    elif t == "blob":
        try:
            base64.b64decode(value, validate=True)
        except Exception:
            problem(path, f"expected base64 ({shape.name}), got {value!r}")
    else:
        problem(path, f"unexpected shape type {t}")


def check_json(value, shape, path):
    """A JSON body (awsJson1_x, restJson1) against `shape`."""
    if value is None:
        return
    t = shape.type_name
    if t == "structure":
        if not isinstance(value, dict):
            return problem(path, f"expected an object ({shape.name}), got {value!r}")
        members = {}
        for name, member in shape.members.items():
            if member.serialization.get("location"):
                continue  # headers, status code, query: not in the body
            members[member.serialization.get("name", name)] = member
        for key, item in value.items():
            if key == "__type":
                continue
            member = members.get(key)
            if member is None:
                problem(f"{path}.{key}", f"not a member of {shape.name} (known: {sorted(members)})")
            else:
                check_json(item, member, f"{path}.{key}")
    elif t == "list":
        if not isinstance(value, list):
            return problem(path, f"expected a list ({shape.name}), got {value!r}")
        for i, item in enumerate(value):
            check_json(item, shape.member, f"{path}[{i}]")
    elif t == "map":
        if not isinstance(value, dict):
            return problem(path, f"expected a map ({shape.name}), got {value!r}")
        for key, item in value.items():
            check_scalar(key, shape.key, f"{path}<key>")
            check_json(item, shape.value, f"{path}[{key!r}]")
    else:
        check_scalar(value, shape, path)


def local(tag):
    return tag.split("}", 1)[-1]


def check_xml_scalar(text, shape, path):
    t = shape.type_name
    text = text or ""
    try:
        if t in ("integer", "long"):
            int(text)
        elif t in ("float", "double"):
            float(text)
        elif t == "boolean":
            if text not in ("true", "false"):
                raise ValueError(text)
        elif t == "timestamp":
            datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
        elif t == "string":
            return check_scalar(text, shape, path)
    except ValueError:
        return problem(path, f"{text!r} does not parse as {t} ({shape.name})")
    checked["members"] += 1


def xml_name(name, member):
    return member.serialization.get("name", name)


def check_xml(element, shape, path):
    """One XML element (query / ec2 protocols) against `shape`."""
    t = shape.type_name
    if t == "structure":
        members = {xml_name(n, m): m for n, m in shape.members.items()}
        for child in element:
            key = local(child.tag)
            member = members.get(key)
            if member is None:
                problem(f"{path}.{key}", f"not a member of {shape.name} (known: {sorted(members)})")
            elif member.serialization.get("flattened"):
                check_xml(child, member.member, f"{path}.{key}")
            else:
                check_xml(child, member, f"{path}.{key}")
    elif t == "list":
        item = shape.member.serialization.get("name", "member")
        for i, child in enumerate(element):
            if local(child.tag) != item:
                problem(f"{path}[{i}]", f"list item is <{local(child.tag)}>, expected <{item}>")
            check_xml(child, shape.member, f"{path}[{i}]")
    elif t == "map":
        for i, entry in enumerate(element):
            for part in entry:
                if local(part.tag) == shape.key.serialization.get("name", "key"):
                    check_xml_scalar(part.text, shape.key, f"{path}<key {i}>")
                else:
                    check_xml(part, shape.value, f"{path}[{i}]")
    else:
        if len(element):
            problem(path, f"expected a {t} value, got nested elements")
        check_xml_scalar(element.text, shape, path)


def validate(operation_model, body):
    """Checks one successful raw response against the operation's output shape."""
    shape = operation_model.output_shape
    protocol = operation_model.service_model.resolved_protocol
    where = f"{operation_model.service_model.service_name}:{operation_model.name}"
    if shape is None:
        return
    if protocol in ("json", "rest-json"):
        try:
            value = json.loads(body or b"{}")
        except ValueError as e:
            return problem(where, f"the body is not JSON: {e}")
        check_json(value, shape, where)
    elif protocol in ("query", "ec2"):
        root = ET.fromstring(body)
        if local(root.tag) != f"{operation_model.name}Response":
            problem(where, f"root element <{local(root.tag)}>, expected <{operation_model.name}Response>")
        node = root
        if protocol == "query":
            wrapper = shape.serialization.get("resultWrapper", f"{operation_model.name}Result")
            found = [c for c in root if local(c.tag) == wrapper]
            if not found:
                return problem(where, f"no <{wrapper}> in the response")
            node = found[0]
            for child in root:
                if local(child.tag) not in (wrapper, "ResponseMetadata"):
                    problem(where, f"unexpected <{local(child.tag)}> beside <{wrapper}>")
        else:
            node = ET.Element("root")
            node.extend(c for c in root if local(c.tag) != "requestId")
        check_xml(node, shape, where)
    else:
        problem(where, f"protocol {protocol} is not checked")


def capture(operation_model, response_dict, **_):
    checked["calls"] += 1
    if response_dict["status_code"] < 300:
        validate(operation_model, response_dict["body"])


# --- clients -------------------------------------------------------------------------------------


def client(service, region="us-east-1", credentials=None):
    key, secret, session = credentials or ("test", "test", None)
    c = boto3.client(
        service,
        endpoint_url=ENDPOINT,
        region_name=region,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        aws_session_token=session,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )
    c.meta.events.register("before-parse", capture)
    return c


def expect_error(where, call, code, status=None, modeled=None):
    """`call()` must fail with `code` (and `status`), parsed by botocore as `modeled`."""
    checked["errors"] += 1
    try:
        call()
    except ClientError as e:
        got = e.response["Error"].get("Code")
        if got != code:
            problem(where, f"error code {got!r}, expected {code!r}")
        got_status = e.response["ResponseMetadata"].get("HTTPStatusCode")
        if status is not None and got_status != status:
            problem(where, f"HTTP {got_status} for {code}, the model says {status}")
        if modeled is not None and type(e).__name__ != modeled:
            problem(where, f"botocore raised {type(e).__name__}, not the modeled {modeled}")
        return e
    problem(where, f"succeeded, expected {code}")


def one(where, items):
    if len(items) != 1:
        problem(where, f"expected exactly one result, got {len(items)}")
    return items[0] if items else {}


# --- the operations the worker calls ---------------------------------------------------------------


def sts():
    c = client("sts")
    who = c.get_caller_identity()
    assumed = c.assume_role(
        RoleArn="arn:aws:iam::123456789012:role/buyonce-purchaser", RoleSessionName="buyonce"
    )["Credentials"]
    creds = (assumed["AccessKeyId"], assumed["SecretAccessKey"], assumed["SessionToken"])
    other = client("sts", credentials=creds).get_caller_identity()
    if other["Account"] != "123456789012" or who["Account"] == other["Account"]:
        problem("sts:AssumeRole", f"assumed role is in account {other['Account']}")


def ec2():
    c = client("ec2")
    offerings = c.describe_reserved_instances_offerings(
        InstanceType="m5.large",
        ProductDescription="Linux/UNIX",
        OfferingClass="standard",
        OfferingType="All Upfront",
        MinDuration=ONE_YEAR,
        MaxDuration=ONE_YEAR,
        InstanceTenancy="default",
        IncludeMarketplace=False,
        Filters=[{"Name": "scope", "Values": ["Region"]}],
    )["ReservedInstancesOfferings"]
    offering = one("ec2:DescribeReservedInstancesOfferings (scope=Region)", offerings)
    zonal = c.describe_reserved_instances_offerings(
        InstanceType="m5.large", OfferingType="All Upfront", MinDuration=ONE_YEAR, MaxDuration=ONE_YEAR
    )["ReservedInstancesOfferings"]
    if not any(o.get("Scope") == "Availability Zone" for o in zonal):
        problem("ec2:DescribeReservedInstancesOfferings", "no zonal offering listed without a zone")
    expect_error(
        "ec2:PurchaseReservedInstancesOffering (DryRun)",
        lambda: c.purchase_reserved_instances_offering(
            ReservedInstancesOfferingId=offering["ReservedInstancesOfferingId"], InstanceCount=1, DryRun=True
        ),
        "DryRunOperation",
        412,
    )
    ri = c.purchase_reserved_instances_offering(
        ReservedInstancesOfferingId=offering["ReservedInstancesOfferingId"], InstanceCount=2
    )["ReservedInstancesId"]
    c.create_tags(Resources=[ri], Tags=[{"Key": TAG_KEY, "Value": TOKEN}])
    found = c.describe_reserved_instances(
        Filters=[
            {"Name": f"tag:{TAG_KEY}", "Values": [TOKEN]},
            {"Name": "state", "Values": ["active", "payment-pending", "payment-failed", "queued"]},
        ]
    )["ReservedInstances"]
    got = one("ec2:DescribeReservedInstances (tag filter)", found)
    if got.get("ReservedInstancesId") != ri or got.get("Scope") != "Region":
        problem("ec2:DescribeReservedInstances", f"found {got}")
    c.describe_reserved_instances(
        Filters=[
            {"Name": "instance-type", "Values": ["m5.large"]},
            {"Name": "product-description", "Values": ["Linux/UNIX"]},
            {"Name": "duration", "Values": [str(ONE_YEAR)]},
            {"Name": "scope", "Values": ["Region"]},
        ]
    )
    expect_error(
        "ec2:PurchaseReservedInstancesOffering (unknown offering)",
        lambda: c.purchase_reserved_instances_offering(
            ReservedInstancesOfferingId="00000000-0000-4000-8000-000000000000", InstanceCount=1
        ),
        "InvalidReservedInstancesOfferingId",
    )


def savings_plans():
    c = client("savingsplans")
    offerings = c.describe_savings_plans_offerings(
        planTypes=["Compute"], durations=[ONE_YEAR], paymentOptions=["Partial Upfront"], currencies=["USD"]
    )["searchResults"]
    offering = one("savingsplans:DescribeSavingsPlansOfferings", offerings)
    for plan_type in ("EC2Instance", "SageMaker", "Database"):
        c.describe_savings_plans_offerings(planTypes=[plan_type], currencies=["USD", "EUR", "CNY"])
    # 0.333 $/h for a year is 2917.08 in total: a whole-number upfront between 50 and 99 %.
    create = dict(
        savingsPlanOfferingId=offering["offeringId"],
        commitment="0.333",
        upfrontPaymentAmount="1459",
        clientToken=TOKEN,
        tags={TAG_KEY: TOKEN},
    )
    first = c.create_savings_plan(**create)["savingsPlanId"]
    again = c.create_savings_plan(**create)["savingsPlanId"]
    if first != again:
        problem("savingsplans:CreateSavingsPlan", "the same client token bought a second plan")
    expect_error(
        "savingsplans:CreateSavingsPlan (token reused with other parameters)",
        lambda: c.create_savings_plan(**dict(create, commitment="0.5")),
        "ValidationException",
        400,
        "ValidationException",
    )
    expect_error(
        "savingsplans:CreateSavingsPlan (upfront with cents)",
        lambda: c.create_savings_plan(**dict(create, clientToken="other", upfrontPaymentAmount="1458.54")),
        "ValidationException",
        400,
        "ValidationException",
    )
    plans = []
    token = None
    while True:
        page = c.describe_savings_plans(
            states=["payment-pending", "payment-failed", "active", "queued", "queued-deleted", "pending-return", "returned"],
            maxResults=1000,
            **({"nextToken": token} if token else {}),
        )
        plans += page["savingsPlans"]
        token = page.get("nextToken")
        if not token:
            break
    mine = [p for p in plans if p.get("tags", {}).get(TAG_KEY) == TOKEN]
    if [p["savingsPlanId"] for p in mine] != [first]:
        problem("savingsplans:DescribeSavingsPlans", f"the token's plan is not found by its tag: {mine}")


def by_id(service, region, offerings_call, purchase_call, describe_call, exists, missing):
    c = client(service, region)
    offering = offerings_call(c)
    bought = purchase_call(c, offering)
    expect_error(f"{service}: a second purchase under the same ID", lambda: purchase_call(c, offering), *exists)
    describe_call(c, bought)
    expect_error(f"{service}: describe an unknown ID", lambda: describe_call(c, "nope-" + TOKEN[:20]), *missing)


def rds():
    by_id(
        "rds",
        "eu-west-1",
        lambda c: one(
            "rds:DescribeReservedDBInstancesOfferings",
            c.describe_reserved_db_instances_offerings(
                DBInstanceClass="db.r6g.large",
                Duration=str(ONE_YEAR),
                ProductDescription="postgresql",
                OfferingType="All Upfront",
                MultiAZ=False,
            )["ReservedDBInstancesOfferings"],
        ),
        lambda c, o: c.purchase_reserved_db_instances_offering(
            ReservedDBInstancesOfferingId=o["ReservedDBInstancesOfferingId"],
            ReservedDBInstanceId="rds-" + TOKEN[:40],
            DBInstanceCount=1,
            Tags=[{"Key": TAG_KEY, "Value": TOKEN}],
        )["ReservedDBInstance"]["ReservedDBInstanceId"],
        lambda c, i: c.describe_reserved_db_instances(ReservedDBInstanceId=i),
        ("ReservedDBInstanceAlreadyExists", 404, "ReservedDBInstanceAlreadyExistsFault"),
        ("ReservedDBInstanceNotFound", 404, "ReservedDBInstanceNotFoundFault"),
    )


def elasticache():
    by_id(
        "elasticache",
        "us-east-1",
        lambda c: one(
            "elasticache:DescribeReservedCacheNodesOfferings",
            c.describe_reserved_cache_nodes_offerings(
                CacheNodeType="cache.r6g.large",
                Duration=str(ONE_YEAR),
                ProductDescription="redis",
                OfferingType="All Upfront",
            )["ReservedCacheNodesOfferings"],
        ),
        lambda c, o: c.purchase_reserved_cache_nodes_offering(
            ReservedCacheNodesOfferingId=o["ReservedCacheNodesOfferingId"],
            ReservedCacheNodeId="ec-" + TOKEN[:40],
            CacheNodeCount=2,
            Tags=[{"Key": TAG_KEY, "Value": TOKEN}],
        )["ReservedCacheNode"]["ReservedCacheNodeId"],
        lambda c, i: c.describe_reserved_cache_nodes(ReservedCacheNodeId=i),
        ("ReservedCacheNodeAlreadyExists", 404, "ReservedCacheNodeAlreadyExistsFault"),
        ("ReservedCacheNodeNotFound", 404, "ReservedCacheNodeNotFoundFault"),
    )


def memorydb():
    by_id(
        "memorydb",
        "us-east-1",
        lambda c: one(
            "memorydb:DescribeReservedNodesOfferings",
            c.describe_reserved_nodes_offerings(
                NodeType="db.r6g.large", Duration=str(ONE_YEAR), OfferingType="All Upfront"
            )["ReservedNodesOfferings"],
        ),
        lambda c, o: c.purchase_reserved_nodes_offering(
            ReservedNodesOfferingId=o["ReservedNodesOfferingId"],
            ReservationId="mdb-" + TOKEN[:40],
            NodeCount=1,
            Tags=[{"Key": TAG_KEY, "Value": TOKEN}],
        )["ReservedNode"]["ReservationId"],
        lambda c, i: c.describe_reserved_nodes(ReservationId=i),
        ("ReservedNodeAlreadyExistsFault", 400, "ReservedNodeAlreadyExistsFault"),
        ("ReservedNodeNotFoundFault", 400, "ReservedNodeNotFoundFault"),
    )


def opensearch():
    c = client("opensearch")
    offerings = c.describe_reserved_instance_offerings(MaxResults=100)["ReservedInstanceOfferings"]
    offering = [
        o for o in offerings
        if o["InstanceType"] == "r6g.large.search" and o["Duration"] == ONE_YEAR and o["PaymentOption"] == "ALL_UPFRONT"
    ]
    offering = one("opensearch:DescribeReservedInstanceOfferings", offering)
    name = "buyonce-" + TOKEN[:40]
    buy = lambda: c.purchase_reserved_instance_offering(
        ReservedInstanceOfferingId=offering["ReservedInstanceOfferingId"], ReservationName=name, InstanceCount=2
    )
    buy()
    expect_error("opensearch: a second purchase under the same name", buy, "ResourceAlreadyExistsException", 409, "ResourceAlreadyExistsException")
    found = c.describe_reserved_instances(MaxResults=100)["ReservedInstances"]
    one("opensearch:DescribeReservedInstances", [r for r in found if r.get("ReservationName") == name])
    expect_error(
        "opensearch: describe an unknown reservation",
        lambda: c.describe_reserved_instances(ReservedInstanceId="00000000-0000-4000-8000-000000000000"),
        "ResourceNotFoundException",
        409,
        "ResourceNotFoundException",
    )


def redshift():
    c = client("redshift")
    offerings = c.describe_reserved_node_offerings(MaxRecords=100)["ReservedNodeOfferings"]
    offering = one(
        "redshift:DescribeReservedNodeOfferings",
        [o for o in offerings if o["NodeType"] == "ra3.xlplus" and o["Duration"] == ONE_YEAR and o["OfferingType"] == "All Upfront"],
    )
    node = c.purchase_reserved_node_offering(ReservedNodeOfferingId=offering["ReservedNodeOfferingId"], NodeCount=2)
    c.describe_reserved_nodes(MaxRecords=100)
    expect_error(
        "redshift: describe an unknown node",
        lambda: c.describe_reserved_nodes(ReservedNodeId="00000000-0000-4000-8000-000000000000"),
        "ReservedNodeNotFound",
        404,
        "ReservedNodeNotFoundFault",
    )
    if not node["ReservedNode"]["ReservedNodeId"]:
        problem("redshift:PurchaseReservedNodeOffering", "no reserved node ID")


def throttling():
    """The throttling errors fakecloud injects parse as the codes the worker retries on."""
    admin = f"{ENDPOINT}/_fakecloud/faults"
    import urllib.request

    def put(body):
        request = urllib.request.Request(admin, data=json.dumps(body).encode(), method="PUT")
        request.add_header("Content-Type", "application/json")
        urllib.request.urlopen(request).read()

    put({"rules": [{"operation": "*", "kind": "error", "error": "throttling"}]})
    try:
        expect_error("ec2 throttled", lambda: client("ec2").describe_reserved_instances(), "RequestLimitExceeded")
        expect_error("rds throttled", lambda: client("rds").describe_reserved_db_instances(), "Throttling", 400)
        expect_error("memorydb throttled", lambda: client("memorydb").describe_reserved_nodes(), "ThrottlingException", 400)
        expect_error("savingsplans throttled", lambda: client("savingsplans").describe_savings_plans(), "ThrottlingException", 429)
    finally:
        put({"rules": []})


def self_test():
    """The validator must see what botocore's parsers drop: a response with one known defect
    of each kind must report each of them."""
    loader = botocore.session.get_session()
    ec2_op = loader.get_service_model("ec2").operation_model("DescribeReservedInstances")
    sp_op = loader.get_service_model("savingsplans").operation_model("DescribeSavingsPlans")
    rds_op = loader.get_service_model("rds").operation_model("DescribeReservedDBInstances")
    before = len(problems)
    validate(
        ec2_op,
        b"<DescribeReservedInstancesResponse xmlns='http://ec2.amazonaws.com/doc/2016-11-15/'>"
        b"<requestId>r</requestId><reservedInstancesSet><item>"
        b"<instanceCount>two</instanceCount><bogusField>1</bogusField><state>sold</state>"
        b"</item><member/></reservedInstancesSet></DescribeReservedInstancesResponse>",
    )
    validate(
        sp_op,
        json.dumps({"savingsPlans": [{"state": "nope", "bogus": 1, "termDurationInSeconds": "1"}]}).encode(),
    )
    validate(
        rds_op,
        b"<DescribeReservedDBInstancesResponse><DescribeReservedDBInstancesResult>"
        b"<ReservedDBInstances><ReservedDBInstance><MultiAZ>yes</MultiAZ></ReservedDBInstance>"
        b"</ReservedDBInstances></DescribeReservedDBInstancesResult><Extra/>"
        b"</DescribeReservedDBInstancesResponse>",
    )
    found = problems[before:]
    del problems[before:]
    expected = [
        "does not parse as integer",  # instanceCount
        "not a member of ReservedInstances",  # bogusField
        "is not in the enum",  # state sold
        "list item is <member>",  # EC2 lists are <item>
        "is not in the enum",  # savings plan state
        "not a member of SavingsPlan",  # bogus
        "expected an integer",  # termDurationInSeconds as a string
        "does not parse as boolean",  # MultiAZ
        "unexpected <Extra>",
    ]
    missing = [e for e in expected if not any(e in f for f in found)]
    if missing or len(found) < len(expected):
        print(f"the validator's self-test failed: missing {missing}; reported {found}")
        sys.exit(2)


def main():
    self_test()
    started = time.time()
    for check in (sts, ec2, savings_plans, rds, elasticache, memorydb, opensearch, redshift, throttling):
        try:
            check()
        except Exception as e:  # a shape botocore itself cannot parse lands here
            problem(check.__name__, f"{type(e).__name__}: {e}")
    print(
        f"boto3 {boto3.__version__} / botocore {botocore.__version__} against {ENDPOINT}: "
        f"{checked['calls']} calls, {checked['members']} response members checked, "
        f"{checked['errors']} error cases, {len(problems)} problem(s) in {time.time() - started:.1f}s"
    )
    for p in problems:
        print(f"  - {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
