//! `allot schedules create | list`: allotment schedules (recurring grants).

use anyhow::Result;

use super::{
    args::{CreateScheduleArgs, SchedulesCommand},
    transport::Ctx,
};
use crate::proto::{self, grant_service_client::GrantServiceClient};

impl CreateScheduleArgs {
    /// Rollover CAPPED when a cap is given, else NONE.
    pub(super) fn request(self) -> proto::CreateAllotmentScheduleRequest {
        let terms = self.terms;
        let rollover_policy = match self.rollover_cap {
            Some(_) => proto::RolloverPolicy::Capped,
            None => proto::RolloverPolicy::None,
        };
        let schedule = proto::AllotmentSchedule {
            wallet_id: self.wallet,
            amount: self.amount,
            period: self.period.into(),
            start_time: self.start,
            end_time: self.end,
            rollover_policy: rollover_policy.into(),
            rollover_cap: self.rollover_cap.unwrap_or_default(),
            kind: terms.kind.into(),
            priority: terms.priority,
            unit_price: terms.unit_price.unwrap_or_default(),
            currency: terms.currency.unwrap_or_default(),
            contract_ref: terms.contract_ref.unwrap_or_default(),
            ..Default::default()
        };
        proto::CreateAllotmentScheduleRequest {
            allotment_schedule: Some(schedule),
            request_id: self.request.get(),
        }
    }
}

pub(super) async fn run(ctx: &Ctx, command: SchedulesCommand) -> Result<()> {
    let mut client = ctx.client(GrantServiceClient::new).await?;
    match command {
        SchedulesCommand::Create(args) => {
            ctx.show(client.create_allotment_schedule(args.request()))
                .await
        }
        SchedulesCommand::List { wallet, page } => {
            let request = proto::ListAllotmentSchedulesRequest {
                wallet_id: wallet,
                ..Default::default()
            };
            ctx.pages(page, &client, request, |mut c, r| async move {
                c.list_allotment_schedules(r).await
            })
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::client::args::{ClientCommand, Group, SchedulesCommand, tests::parse};
    use crate::proto;

    #[test]
    fn schedules_roll_over_only_with_a_cap() {
        let create = |extra: &[&str]| {
            let args = [
                &[
                    "schedules",
                    "create",
                    "--wallet",
                    "wal_1",
                    "--amount",
                    "100",
                ][..],
                &["--period", "monthly", "--request-id", "r"],
                extra,
            ]
            .concat();
            match parse(&args).unwrap() {
                ClientCommand::Schedules(Group {
                    command: SchedulesCommand::Create(create),
                    ..
                }) => create.request().allotment_schedule.unwrap(),
                other => panic!("{other:?}"),
            }
        };
        let plain = create(&[]);
        assert_eq!(plain.rollover_policy, proto::RolloverPolicy::None as i32);
        assert_eq!(plain.period, proto::SchedulePeriod::Monthly as i32);
        assert_eq!(plain.kind, proto::GrantKind::Contract as i32);
        let capped = create(&["--rollover-cap", "50", "--kind", "purchase"]);
        assert_eq!(capped.rollover_policy, proto::RolloverPolicy::Capped as i32);
        assert_eq!(capped.rollover_cap, "50");
        assert_eq!(capped.kind, proto::GrantKind::Purchase as i32);
        assert!(parse(&["schedules", "create", "--wallet", "w", "--amount", "1"]).is_err());
    }
}
