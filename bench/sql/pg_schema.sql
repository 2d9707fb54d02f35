CREATE TABLE customers (
  id bigint PRIMARY KEY,
  name text NOT NULL,
  email text NOT NULL,
  country char(2) NOT NULL,
  created_at timestamptz NOT NULL,
  balance numeric(12,2) NOT NULL,
  profile jsonb
);
CREATE TABLE events (
  id bigint PRIMARY KEY,
  customer_id bigint NOT NULL,
  occurred_at timestamptz NOT NULL,
  kind text NOT NULL,
  amount numeric(12,2),
  session_id text NOT NULL,
  payload jsonb NOT NULL,
  note text
);
CREATE FUNCTION bench_words() RETURNS text[] IMMUTABLE LANGUAGE sql AS $$
  SELECT '{account,active,address,after,agent,alpha,amount,apple,archive,backup,balance,basket,batch,before,billing,blue,branch,bucket,cache,card,cart,change,check,client,cloud,code,column,commit,config,coupon,credit,customer,daily,data,debit,delivery,device,discount,domain,draft,email,error,event,export,failed,field,file,filter,first,green,group,guest,handle,header,import,index,invoice,item,label,last,ledger,limit,login,logout,manager,member,merge,message,method,mobile,monthly,network,notice,order,owner,package,page,paid,partner,payment,pending,period,phone,plan,price,product,profile,queue,quota,record,refund,region,report,request,retry,review,route,sale,search,session,shipping,signup,status,stock,store,stream,subscription,summary,support,system,table,task,ticket,token,total,trial,update,upgrade,user,value,vendor,version,view,visit,wallet,warehouse,weekly,yellow}'::text[]
$$;
